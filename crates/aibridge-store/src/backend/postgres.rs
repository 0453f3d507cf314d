//! PostgreSQL.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::WriteBatch;
use crate::error::{StoreError, db, migration};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

const MAX_CONNECTIONS: u32 = 8;

mod shared {
    pub(crate) type Db = sqlx::Postgres;

    async fn begin_write(
        pool: &sqlx::Pool<Db>,
    ) -> Result<sqlx::Transaction<'static, Db>, sqlx::Error> {
        pool.begin().await
    }

    /// Reports read the covering index when the planner likes it.
    const REPORT_SOURCE: &str = "interceptions i";

    include!("shared.rs");
}

/// The PostgreSQL store (`postgres://…`, `postgresql://…`). Tables live in the connection's
/// `search_path` (e.g. `?options=-csearch_path%3Daibridge` for a schema of its own). TLS is not
/// built in: connect over a trusted network or a local socket.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pools: shared::Pools,
}

impl PostgresStore {
    const BACKEND: &'static str = "postgres";

    /// Connects to `url`. Does not migrate.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url).map_err(db)?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(db)?;
        Ok(Self {
            pools: shared::Pools {
                read: pool.clone(),
                write: pool,
            },
        })
    }

    async fn run_migrations(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pools.write).await.map_err(migration)
    }

    async fn write(&self, batch: Arc<WriteBatch>) -> Result<(), StoreError> {
        self.pools.commit(&batch).await
    }

    async fn close_all(&self) {
        self.pools.close().await
    }
}

super::delegate_store!(PostgresStore);
