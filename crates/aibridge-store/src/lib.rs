//! Recording store for aibridge: users, gateway tokens, interceptions and everything recorded
//! about them (attempts, token usage, prompts, tool calls, model thoughts), and the reports read
//! back from them. Records in, reports out: no HTTP, no provider logic.
//!
//! Two backends implement one [`Store`] trait: SQLite ([`SqliteStore`], the embedded default,
//! `sqlite://PATH` or `sqlite::memory:`) and PostgreSQL ([`PostgresStore`], `postgres://…`).
//! [`open`] picks one by URL; [`Store::migrate`] applies the migrations embedded in the binary
//! (`migrations/sqlite`, `migrations/postgres`; applying them again is a no-op).
//!
//! # Data model
//!
//! All timestamps are unix milliseconds in integer columns, in both engines.
//!
//! | table | key | notes |
//! |---|---|---|
//! | `users` | `id` (generated), `name` unique | |
//! | `tokens` | `id` (caller's), `secret_hash` unique | `user_id` → `users`; only the hash the caller computed is stored, never a secret |
//! | `interceptions` | `id` (caller's UUID) | the [`NewInterception`] columns, then the [`InterceptionEnded`] columns (`NULL` until the end is written; its `attempts` count is the `attempt_count` column), and the request's token totals and `failovers`: the end's [`Totals`] when it carries them, else summed from the rows when the end is written |
//! | `attempts` | (`interception_id`, `number`) | → `interceptions` |
//! | `token_usages` | (`interception_id`, `seq`) in SQLite; generated `id` and unique (`interception_id`, `seq`) in PostgreSQL | → `interceptions`; `extra` is JSON text |
//! | `prompts`, `tool_calls`, `thoughts` | generated `id` (write order), unique (`interception_id`, `seq`) | → `interceptions` |
//!
//! Indexes of `interceptions`: `(user_name, started_at, id)` (per-user listing) and
//! `interceptions_report` (`started_at` first, then every column reports group or sum by: it
//! serves newest-first listing, time windows, reports and [`Store::served_by_key`]).
//! PostgreSQL also keeps `(started_at, id)` and `(provider_name, key_hint)`; SQLite dropped
//! them (migration 6: every b-tree a recorded request touches is work on the writer thread), and
//! clusters attempts and token usages by their keys (`WITHOUT ROWID`). Child tables cascade on
//! delete so that a later retention job only deletes interceptions.
//!
//! An interception stores the **user name**, not a reference to `users`: names are the stable
//! identity (there is no rename), and recording must not fail (and so abort a request) for a
//! user that has no row, such as `local` with `AIBRIDGE_AUTH=none`.
//!
//! # Writing
//!
//! [`Store::commit`] writes a [`WriteBatch`] in one transaction: its interception starts (all or
//! none), then its records, one statement each, prepared once per connection and reused. Each
//! child insert is `INSERT … SELECT … WHERE EXISTS (the interception)`, so a record for an
//! unknown interception writes nothing without raising an error that would abort the
//! transaction: the rest is committed and the call returns [`StoreError::PartialBatch`] listing
//! the records not written. (SQLite's writer skips that look-up for a record whose interception
//! it knows: started in the same batch, or started earlier by this writer and not yet ended.)
//! Should a statement fail anyway (a duplicate attempt number, say), the transaction is rolled
//! back and the batch written again with a savepoint around each record, so only the failing
//! records are lost. An end written twice overwrites the first.
//! ([`Store::start_interception`] and [`Store::write_batch`] are batches of starts or records
//! only.) The statements live in one place (`backend/sql.rs`) for both drivers.
//!
//! SQLite files run in WAL mode with `synchronous = NORMAL` (a commit survives a crash of the
//! process; a power loss may lose the last commits), a 5 s busy timeout and foreign keys on.
//! Batches are written by one rusqlite connection on a thread of its own (`sqlite_writer.rs`):
//! sqlx's driver would hand every statement to its worker thread and back, which cost more CPU
//! than the rest of a recorded request. Automatic checkpoints are off; a second thread
//! checkpoints (`PASSIVE`) every 250 ms, so no commit waits for one, and the writer completes a
//! checkpoint itself, between batches, when the WAL has grown past 64 MB (SQLite reuses the WAL
//! only once all of it is copied, which a concurrent checkpoint never achieves under steady
//! writes). New files use 4 KiB pages: commits carry many requests' rows, so larger pages mean
//! fewer page writes and shallower b-trees per request. Migrations, users and tokens go through
//! one sqlx connection (write transactions begin `IMMEDIATE`), reads through a pool of 4
//! `query_only` connections; an in-memory database is one sqlx connection for everything.
//! PostgreSQL uses one pool of 8 connections, plain TCP (no TLS built in); its tables go to the
//! first schema of the `search_path`, which the URL can set
//! (`?options=-csearch_path%3Daibridge`), as it can set `synchronous_commit` for an operator
//! who prefers faster commits to the durability of the last ones.
//!
//! [`Store::token_by_hash`] refreshes `last_used_at` only when it is older than a minute, so
//! authentication is a read on most requests; a revoked token is never returned.
//!
//! # Reading
//!
//! Reports are aggregated by the database (`GROUP BY`). Time filters apply to the start of an
//! interception: `since` inclusive, `until` exclusive. In [`Store::usage`], `requests` counts
//! interceptions, ended or not; `failed_requests` those that ended with an outcome other than
//! `completed`; `failovers` the attempts with a failover reason; token counts sum the token
//! usage records. Failovers and tokens are aggregated per interception before the join, so
//! neither multiplies the other. Days are UTC, from integer division of the start time. Rows
//! come in byte order of `group` on both engines.
//!
//! [`Store::usage_by_day`] is the same report with each group split by UTC day (for charts).
//!
//! [`Store::interceptions`] lists newest first by (`started_at`, `id`); the cursor is the id of
//! the last item of the previous page, and the next page holds what sorts strictly after it, so
//! pages neither repeat nor skip even when start times tie. A page costs six queries whatever
//! its size: the interceptions, then each child table for all of them at once.
//! [`Store::interception`] reads one by id the same way.
//!
//! # Errors
//!
//! [`StoreError::Database`] carries the driver's message only: bound values (token hashes,
//! prompts) and PostgreSQL's `DETAIL` are never part of it, and a URL in an error is shown
//! without its password.

mod backend;
mod error;
mod types;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use backend::postgres::PostgresStore;
pub use backend::sqlite::SqliteStore;
pub use error::{RecordFailure, StoreError};
pub use types::{
    AttemptRow, AttemptView, CredentialKind, DailyUsageRow, GroupBy, InterceptionDetail,
    InterceptionEnded, InterceptionFilter, InterceptionPage, NewInterception, NewToken, PromptRow,
    Record, RequestKind, ThoughtRow, ThoughtView, TokenInfo, TokenUsageRow, ToolCallRow,
    ToolCallView, ToolRun, Totals, UnixMillis, UsageCell, UsageFilter, UsageRow, UsageView, User,
    WriteBatch,
};

/// Opens the right backend for the URL (`sqlite://PATH`, `sqlite::memory:`, `postgres://`,
/// `postgresql://`). Does not migrate.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::open(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl(error::redact_url(url)))
    }
}

/// The recording store. Implemented by [`SqliteStore`] and [`PostgresStore`].
#[async_trait::async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;

    /// Applies the embedded migrations that are not applied yet.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// One round trip to the database.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Closes the connections, waiting for them to finish (on shutdown). Calls after it fail.
    async fn close(&self);

    /// [`StoreError::UserExists`] if the name is taken.
    async fn create_user(&self, name: &str, now: UnixMillis) -> Result<User, StoreError>;

    /// All users, by name.
    async fn users(&self) -> Result<Vec<User>, StoreError>;

    /// [`StoreError::NoSuchUser`] if the user is unknown.
    async fn create_token(&self, token: NewToken) -> Result<TokenInfo, StoreError>;

    /// All tokens, revoked ones included, oldest first.
    async fn tokens(&self) -> Result<Vec<TokenInfo>, StoreError>;

    /// `true` if a live token was revoked now.
    async fn revoke_token(&self, id: &str, now: UnixMillis) -> Result<bool, StoreError>;

    /// A live (not revoked) token by the hash of its secret; records `last_used_at` (to the
    /// minute).
    async fn token_by_hash(
        &self,
        secret_hash: &str,
        now: UnixMillis,
    ) -> Result<Option<TokenInfo>, StoreError>;

    /// One transaction: all of the batch's starts or none, then its records. Records that
    /// cannot be written (an unknown interception, a duplicate attempt number) do not stop the
    /// others: those and the starts are committed, then [`StoreError::PartialBatch`] reports
    /// the rest (indexes into `batch.records`). Any other error means nothing was written.
    ///
    /// The batch is shared so that a backend may hand it to a thread of its own, and the caller
    /// can retry it, without copying prompts.
    async fn commit(&self, batch: Arc<WriteBatch>) -> Result<(), StoreError>;

    /// One start, written now ([`Store::commit`] of a batch of one).
    async fn start_interception(&self, record: &NewInterception) -> Result<(), StoreError> {
        self.commit(Arc::new(WriteBatch {
            starts: vec![record.clone()],
            records: Vec::new(),
        }))
        .await
    }

    /// Records only ([`Store::commit`] of a batch without starts).
    async fn write_batch(&self, records: &[Record]) -> Result<(), StoreError> {
        self.commit(Arc::new(WriteBatch {
            starts: Vec::new(),
            records: records.to_vec(),
        }))
        .await
    }

    /// A usage report, one row per group, ordered by group.
    async fn usage(&self, filter: &UsageFilter, by: GroupBy) -> Result<Vec<UsageRow>, StoreError>;

    /// The same report split by UTC day as well: one row per (day, group) that has
    /// interceptions, ordered by day, then group (byte order).
    async fn usage_by_day(
        &self,
        filter: &UsageFilter,
        by: GroupBy,
    ) -> Result<Vec<DailyUsageRow>, StoreError>;

    /// The same report split by UTC day and by model as well: one row per (day, model, group),
    /// ordered by day, model, group. A page's table (summed over days and models) and its
    /// chart by model (summed over groups) from one pass over the records.
    async fn usage_cells(
        &self,
        filter: &UsageFilter,
        by: GroupBy,
    ) -> Result<Vec<UsageCell>, StoreError>;

    /// One page of interceptions with their records, newest first.
    async fn interceptions(
        &self,
        filter: &InterceptionFilter,
    ) -> Result<InterceptionPage, StoreError>;

    /// One interception with its records, by id; `None` when there is none.
    async fn interception(&self, id: &str) -> Result<Option<InterceptionDetail>, StoreError>;

    /// Requests served per key hint of a provider instance (for `/api/v1/keys`): pool requests
    /// whose end named the key that served them.
    async fn served_by_key(&self, provider_name: &str)
    -> Result<BTreeMap<String, i64>, StoreError>;
}
