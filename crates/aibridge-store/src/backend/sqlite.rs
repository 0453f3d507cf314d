//! SQLite: the embedded default.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::WriteBatch;
use crate::backend::sqlite_writer::SqliteWriter;
use crate::error::{StoreError, db, migration};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// Readers of a file database. SQLite in WAL mode lets them run beside the one writer.
const READERS: u32 = 4;

mod shared {
    pub(crate) type Db = sqlx::Sqlite;

    /// `BEGIN IMMEDIATE` takes the write lock up front (waiting up to the busy timeout for
    /// another process), instead of failing with `SQLITE_BUSY` at the first write.
    async fn begin_write(
        pool: &sqlx::Pool<Db>,
    ) -> Result<sqlx::Transaction<'static, Db>, sqlx::Error> {
        pool.begin_with("BEGIN IMMEDIATE").await
    }

    /// Reports read the covering index: SQLite's planner would rather take the per-user index
    /// for a `GROUP BY user_name` and then read every row of the period from the table.
    const REPORT_SOURCE: &str = "interceptions i INDEXED BY interceptions_report";

    include!("shared.rs");
}

/// The SQLite store (`sqlite://PATH`, `sqlite::memory:`).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pools: shared::Pools,
    /// Interceptions and their records of a file database; `None` for an in-memory one,
    /// which only the sqlx connection can see.
    writer: Option<Arc<SqliteWriter>>,
}

impl SqliteStore {
    const BACKEND: &'static str = "sqlite";

    /// Opens (creating if missing) the database at `url`. Does not migrate.
    ///
    /// A file gets WAL journaling, `synchronous = NORMAL`, a 5 s busy timeout and foreign keys.
    /// A new file gets 1 KiB pages instead of 4 KiB: a recorded request adds a row or two to
    /// several tables and indexes, and each commit writes every page it touched to the WAL
    /// whole, so smaller pages cut the bytes written (and later synced) per request about
    /// threefold.
    /// Interceptions and their records are written by a thread of their own, which also
    /// owns checkpointing; migrations, users and tokens through one sqlx connection; reads
    /// through a small pool of their own. An in-memory database lives in one connection that
    /// the pool never closes, and everything goes through it.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(db)?
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5))
            .synchronous(SqliteSynchronous::Normal)
            .page_size(1024);
        if is_memory(url) {
            let pool = single_connection(options).await?;
            let pools = shared::Pools {
                read: pool.clone(),
                write: pool,
            };
            return Ok(Self {
                pools,
                writer: None,
            });
        }
        // The sqlx writer is opened first: it creates the file and switches it to WAL (a
        // persistent property of the file, so the other connections need not set it).
        let write = single_connection(
            options
                .clone()
                .journal_mode(SqliteJournalMode::Wal)
                .pragma("wal_autocheckpoint", "0"),
        )
        .await?;
        let read = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(options.clone().pragma("query_only", "ON"))
            .await
            .map_err(db)?;
        let writer = SqliteWriter::open(options.get_filename())?;
        Ok(Self {
            pools: shared::Pools { read, write },
            writer: Some(Arc::new(writer)),
        })
    }

    async fn run_migrations(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pools.write).await.map_err(migration)
    }

    async fn write(&self, batch: Arc<WriteBatch>) -> Result<(), StoreError> {
        match &self.writer {
            Some(writer) => writer.commit(batch).await,
            None => self.pools.commit(&batch).await,
        }
    }

    async fn close_all(&self) {
        if let Some(writer) = &self.writer {
            writer.close().await;
        }
        self.pools.close().await
    }
}

/// A pool of exactly one connection, kept open for the life of the pool.
async fn single_connection(options: SqliteConnectOptions) -> Result<SqlitePool, StoreError> {
    SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(options)
        .await
        .map_err(db)
}

fn is_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

super::delegate_store!(SqliteStore);
