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
    /// A new file gets 4 KiB pages (files made with 1 KiB pages by earlier versions keep them).
    /// Records are committed many requests at a time, so a commit's pages are mostly full of
    /// new rows whatever their size; at saturation 1 KiB pages cost three times the WAL writes
    /// (SQLite writes each page with calls of its own: 2.7 `pwrite` per recorded request
    /// against 0.86), deeper b-trees and more page splits (7,000 more instructions per recorded
    /// request, callgrind).
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
            .page_size(4096);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::InterceptionFilter;

    /// A database written before migration 6 (attempts and usage rows in rowid tables, usage
    /// rows from before `seq` existed) keeps every row, in its order, once its tables are
    /// rebuilt clustered by their keys.
    #[tokio::test]
    async fn rows_written_before_the_clustered_tables_survive_the_migration() {
        let path = std::env::temp_dir().join(format!("aibridge-m6-{}.db", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}", path.display());
        let store = SqliteStore::open(&url).await.unwrap();
        MIGRATOR.run_to(5, &store.pools.write).await.unwrap();
        sqlx::raw_sql(
            "INSERT INTO interceptions (id, user_name, kind, provider_type, provider_name, \
             method, route, streaming, credential, started_at, ended_at, status, key_hint, \
             attempt_count) VALUES \
             ('old', 'ana', 'bridged', 'anthropic', 'anthropic', 'POST', '/v1/messages', 0, \
             'pool', 1000, 1500, 200, 'sk-…b', 2);
             INSERT INTO attempts (interception_id, number, key_hint, status, failover_reason, \
             cooldown_ms, duration_ms, created_at) VALUES \
             ('old', 2, 'sk-…b', 200, NULL, NULL, 40, 1400), \
             ('old', 1, 'sk-…a', 429, 'rate_limited', 60000, 10, 1100);
             INSERT INTO token_usages (interception_id, input_tokens, output_tokens, \
             cache_read_tokens, cache_write_tokens, created_at, seq) VALUES \
             ('old', 7, 1, 0, 0, 1450, NULL), ('old', 5, 2, 0, 0, 1450, NULL), \
             ('old', 3, 3, 0, 0, 1450, NULL);",
        )
        .execute(&store.pools.write)
        .await
        .unwrap();

        store.run_migrations().await.unwrap();

        let page = store
            .pools
            .interceptions(&InterceptionFilter::default())
            .await
            .unwrap();
        assert_eq!(page.items.len(), 1);
        let old = &page.items[0];
        let attempts: Vec<(u32, Option<&str>)> = old
            .attempts
            .iter()
            .map(|a| (a.number, a.failover_reason.as_deref()))
            .collect();
        assert_eq!(attempts, vec![(1, Some("rate_limited")), (2, None)]);
        let usage: Vec<(i64, i64)> = old.usage.iter().map(|u| (u.input, u.output)).collect();
        assert_eq!(
            usage,
            vec![(7, 1), (5, 2), (3, 3)],
            "usage rows keep their order"
        );
        let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM token_usages ORDER BY seq")
            .fetch_all(&store.pools.read)
            .await
            .unwrap();
        assert!(seqs.iter().all(|&seq| seq < 0), "{seqs:?}");

        store.close_all().await;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
}
