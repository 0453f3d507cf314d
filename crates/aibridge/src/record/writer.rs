//! The writer: one background task that commits records a little later, many requests'
//! records together (see `write_queued`).
//!
//! A request's start is not waited for while the database takes writes: it is queued and
//! committed with the records of the next batch (at most [`RECORDS_LINGER`] later), and kept
//! to be retried like them if that commit fails. As soon as a commit fails, the recorder stops
//! trusting the database: from then on each start is committed before its request goes on (a
//! start that cannot be written refuses the request with 503), until a commit succeeds again.
//! So no request is served unrecorded while the database is unreachable, apart from those
//! already admitted when it went away, whose starts wait in memory for it.
//!
//! What a crash can lose: a SIGKILL (or power loss) loses what is queued and not yet committed,
//! that is the starts and records of at most the last [`RECORDS_LINGER`] plus one commit (while
//! the database is unreachable, everything carried since). SIGTERM loses nothing: the gateway
//! finishes its requests, then the writer commits what is queued.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aibridge_store::{NewInterception, Record, Store, StoreError, WriteBatch};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Queued starts and records taken from the queue at a time.
const MAX_BATCH: usize = 512;

/// While the database is unreachable, records wait in memory to be retried, up to this many;
/// beyond it the oldest are dropped (and counted in the log) rather than exhaust memory.
const MAX_CARRIED: usize = 100_000;

/// How long records wait, at most, to be committed together.
pub(super) const RECORDS_LINGER: Duration = Duration::from_millis(20);

/// Records committed as soon as this many are waiting. Under load every commit rewrites the
/// same few leaf pages of each table and index into the WAL, so larger commits write fewer bytes
/// per request: at saturation, 1,024 instead of 128 took the WAL writes from 4.4 to 2.7 `pwrite`
/// calls per request. Below ~10,000 requests/s the linger ends a batch first.
const RECORDS_RIDE_ALONG: usize = 1024;

/// Retries of a failed write, doubling from the first to the last.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(5);

/// Tries of the final write on shutdown.
const SHUTDOWN_TRIES: u32 = 5;

/// What the writer is asked to write.
enum Queued {
    /// A start whose request waits for its commit (the database failed last time), and where
    /// to say whether it was committed.
    Start(NewInterception, oneshot::Sender<Result<(), StoreError>>),
    /// A start whose request went on: committed with the next records, retried like them.
    DeferredStart(NewInterception),
    Record(Record),
    /// Commit every record queued so far now, then say so.
    Flush(oneshot::Sender<()>),
}

/// How long a caller waits for a flush before reading what is committed anyway.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct Recorder {
    store: Arc<dyn Store>,
    // Unbounded on purpose: records are small, and a bounded queue would have to either drop
    // records or stall requests (and streams ending in `Drop`, which cannot wait) when the
    // database is slow. The writer drains it as fast as the database allows.
    queue: mpsc::UnboundedSender<Queued>,
    stop: CancellationToken,
    writer: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Whether the last commit succeeded: then starts are not waited for.
    writable: Arc<AtomicBool>,
    /// `record_requests = false`: nothing is written (benchmarks, or deployments that must not
    /// keep prompts).
    enabled: bool,
}

impl Recorder {
    /// Starts the background writer (a recorder that is not `enabled` writes nothing).
    pub fn start(store: Arc<dyn Store>, enabled: bool) -> Arc<Self> {
        let (queue, queued) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        // The store was just opened and migrated: it takes writes.
        let writable = Arc::new(AtomicBool::new(true));
        let writer = tokio::spawn(write_queued(
            store.clone(),
            queued,
            stop.clone(),
            writable.clone(),
        ));
        Arc::new(Self {
            store,
            queue,
            stop,
            writer: std::sync::Mutex::new(Some(writer)),
            writable,
            enabled,
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Whether requests are recorded; when not, callers skip the work of observing them.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Queues the start of an interception; the request must not go on if this fails. While
    /// the database takes writes the start rides with the next batch of records; after a failed
    /// commit it is committed before this returns.
    pub async fn begin(&self, record: NewInterception) -> Result<(), StoreError> {
        if !self.enabled {
            return Ok(());
        }
        if self.writable.load(Ordering::Acquire) {
            return self
                .queue
                .send(Queued::DeferredStart(record))
                .map_err(|_| StoreError::Database("the recorder has stopped".into()));
        }
        let (done, committed) = oneshot::channel();
        self.queue
            .send(Queued::Start(record, done))
            .map_err(|_| StoreError::Database("the recorder has stopped".into()))?;
        committed
            .await
            .map_err(|_| StoreError::Database("the recorder has stopped".into()))?
    }

    /// Queues a record for the background writer. Never blocks.
    pub fn record(&self, record: Record) {
        if self.enabled && self.queue.send(Queued::Record(record)).is_err() {
            tracing::error!("recorder already stopped: a record was not written");
        }
    }

    /// Commits every record queued before this call (for readers that must see a request they
    /// just served, such as `/api/v1/keys`). Bounded: a slow database delays the caller by at
    /// most [`FLUSH_WAIT`].
    pub async fn flush(&self) {
        if !self.enabled {
            return;
        }
        let (done, flushed) = oneshot::channel();
        if self.queue.send(Queued::Flush(done)).is_ok() {
            let _ = tokio::time::timeout(FLUSH_WAIT, flushed).await;
        }
    }

    /// Writes everything queued so far and stops the writer.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(writer) = writer {
            let _ = writer.await;
        }
    }
}

/// The writer: commits whatever is queued, one transaction at a time. Starts that a request
/// waits for are committed at once. Deferred starts and records wait up to [`RECORDS_LINGER`]
/// and are then committed together, with the next waited start or on their own, or sooner once
/// [`RECORDS_RIDE_ALONG`] of them are waiting. Every commit writes whole database pages for each
/// table and index it touches, so many requests in one commit cost far less than each request
/// in commits of its own.
async fn write_queued(
    store: Arc<dyn Store>,
    mut queue: mpsc::UnboundedReceiver<Queued>,
    stop: CancellationToken,
    writable: Arc<AtomicBool>,
) {
    let mut pending = PendingWrite {
        writable,
        ..PendingWrite::default()
    };
    let mut received = Vec::with_capacity(MAX_BATCH);
    loop {
        let stopping = tokio::select! {
            n = queue.recv_many(&mut received, MAX_BATCH) => n == 0,
            () = pending.due() => {
                pending.commit(&store, true).await;
                continue;
            }
            () = stop.cancelled() => true,
        };
        pending.take(&mut received);
        if !stopping {
            let with_records = pending.records_due();
            if with_records || !pending.starts.is_empty() {
                pending.commit(&store, with_records).await;
            }
            continue;
        }
        // Requests have finished by now: write what is left, with a bounded number of tries.
        while let Ok(queued) = queue.try_recv() {
            received.push(queued);
        }
        pending.take(&mut received);
        for _ in 0..SHUTDOWN_TRIES {
            pending.commit(&store, true).await;
            if pending.is_empty() {
                return;
            }
            pending.due().await;
        }
        tracing::error!(
            records = pending.records.len(),
            starts = pending.deferred.len(),
            "shutting down: records could not be written and are lost"
        );
        return;
    }
}

/// Answers flush callers when dropped.
struct Flushed(Vec<oneshot::Sender<()>>);

impl Drop for Flushed {
    fn drop(&mut self) {
        for waiter in self.0.drain(..) {
            // A caller that stopped waiting needs no answer.
            let _ = waiter.send(());
        }
    }
}

/// What the next transaction will write: new starts, new records, and deferred starts and
/// records whose earlier transaction failed.
#[derive(Default)]
struct PendingWrite {
    /// Starts whose requests wait for them, with their waiters.
    starts: Vec<NewInterception>,
    waiters: Vec<oneshot::Sender<Result<(), StoreError>>>,
    /// Starts whose requests went on: they go with the records (before them).
    deferred: Vec<NewInterception>,
    records: Vec<Record>,
    /// Callers waiting for the records queued before their flush to be committed.
    flushes: Vec<oneshot::Sender<()>>,
    /// When records waiting without a start are committed anyway.
    deadline: Option<tokio::time::Instant>,
    /// Set while records of a failed transaction wait to be retried.
    retry_after: Option<Duration>,
    /// Shared with the recorder: whether the last commit succeeded.
    writable: Arc<AtomicBool>,
}

impl PendingWrite {
    fn is_empty(&self) -> bool {
        self.starts.is_empty() && self.deferred.is_empty() && self.records.is_empty()
    }

    fn take(&mut self, received: &mut Vec<Queued>) {
        for queued in received.drain(..) {
            match queued {
                Queued::Start(start, waiter) => {
                    self.starts.push(start);
                    self.waiters.push(waiter);
                }
                Queued::DeferredStart(start) => self.deferred.push(start),
                Queued::Record(record) => self.records.push(record),
                Queued::Flush(waiter) => self.flushes.push(waiter),
            }
        }
        if !(self.records.is_empty() && self.deferred.is_empty()) && self.deadline.is_none() {
            self.deadline = Some(tokio::time::Instant::now() + RECORDS_LINGER);
        }
    }

    /// Whether the waiting records go into the next commit before their deadline: enough of
    /// them are waiting (unless they wait for a retry).
    fn records_due(&self) -> bool {
        self.retry_after.is_none()
            && (self.records.len() + self.deferred.len() >= RECORDS_RIDE_ALONG
                || !self.flushes.is_empty())
    }

    /// Resolves when waiting records are due to be committed; never when there are none.
    async fn due(&self) {
        match self.deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    }

    /// One transaction. A start's waiter hears whether it was committed; deferred starts and
    /// records of a failed transaction stay for the next one. Records the store refused one by
    /// one are not retried: the rest of their transaction was committed.
    async fn commit(&mut self, store: &Arc<dyn Store>, with_records: bool) {
        // Whatever happens to this transaction, the records queued before a flush have had
        // their try: its callers hear back when the commit is over.
        let _flushed = Flushed(if with_records {
            std::mem::take(&mut self.flushes)
        } else {
            Vec::new()
        });
        if with_records {
            self.deadline = None;
        }
        let (mut starts, records) = if with_records {
            (
                std::mem::take(&mut self.deferred),
                std::mem::take(&mut self.records),
            )
        } else {
            (Vec::new(), Vec::new())
        };
        let deferred = starts.len();
        starts.append(&mut self.starts);
        if starts.is_empty() && records.is_empty() {
            return;
        }
        let batch = Arc::new(WriteBatch { starts, records });
        let result = store.commit(batch.clone()).await;
        let failure = match &result {
            Ok(()) => None,
            Err(error @ StoreError::PartialBatch { .. }) => {
                tracing::error!(error = %error, "some records could not be written");
                None
            }
            Err(error) => Some(error.to_string()),
        };
        self.writable.store(failure.is_none(), Ordering::Release);
        for waiter in self.waiters.drain(..) {
            let answer = match &failure {
                None => Ok(()),
                Some(message) => Err(StoreError::Database(message.clone())),
            };
            // A waiter that is gone (the client left) needs no answer.
            let _ = waiter.send(answer);
        }
        let Some(message) = failure else {
            if with_records {
                self.retry_after = None;
            }
            return;
        };
        // The store has let go of the batch by now; copy it only if it has not.
        let WriteBatch {
            mut starts,
            mut records,
        } = Arc::try_unwrap(batch).unwrap_or_else(|batch| WriteBatch::clone(&batch));
        // The waited starts were refused; the deferred ones' requests went on, so they stay,
        // before those deferred meanwhile.
        starts.truncate(deferred);
        starts.append(&mut self.deferred);
        self.deferred = starts;
        if records.is_empty() && self.deferred.is_empty() {
            return;
        }
        // Records that arrived meanwhile go after them.
        records.append(&mut self.records);
        if records.len() > MAX_CARRIED {
            let dropped = records.len() - MAX_CARRIED;
            records.drain(..dropped);
            tracing::error!(dropped, "records dropped while the database is unreachable");
        }
        let delay = self
            .retry_after
            .map_or(FIRST_RETRY, |delay| (delay * 2).min(LAST_RETRY));
        tracing::error!(
            records = records.len(),
            starts = self.deferred.len(),
            error = %message,
            retry_in_ms = delay.as_millis() as u64,
            "could not write records"
        );
        self.records = records;
        self.retry_after = Some(delay);
        self.deadline = Some(tokio::time::Instant::now() + delay);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::record::{Outcome, Recording};
    use crate::time::now_millis;
    use aibridge_store::{CredentialKind, InterceptionFilter, RequestKind};
    use sqlx::Connection;
    use std::time::Instant;

    fn start(id: &str) -> NewInterception {
        NewInterception {
            id: id.to_owned(),
            user: "ursula".to_owned(),
            kind: RequestKind::Bridged,
            provider_type: "anthropic".to_owned(),
            provider_name: "anthropic".to_owned(),
            method: "POST".to_owned(),
            route: "/v1/messages".to_owned(),
            model: None,
            streaming: false,
            client: None,
            session_id: None,
            user_agent: None,
            credential: CredentialKind::Pool,
            started_at: now_millis(),
        }
    }

    /// A real SQLite file whose `prompts` table goes away for a while: the records that need it
    /// wait and are written once it is back, and starts meanwhile are not held up by them. When
    /// `interceptions` goes away, the start already admitted waits for it and later starts are
    /// refused until a commit succeeds.
    #[tokio::test]
    async fn records_of_a_failed_transaction_are_written_when_the_database_is_back() {
        let path = std::env::temp_dir().join(format!(
            "aibridge-recorder-{}.db",
            uuid::Uuid::new_v4().simple()
        ));
        let url = format!("sqlite://{}", path.display());
        let store = aibridge_store::open(&url).await.unwrap();
        store.migrate().await.unwrap();
        let recorder = Recorder::start(store.clone(), true);
        let mut admin = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let rename = |from: &str, to: &str| format!("ALTER TABLE {from} RENAME TO {to}");

        recorder.begin(start("kept")).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(rename("prompts", "prompts_away")))
            .execute(&mut admin)
            .await
            .unwrap();
        let mut recording = Recording::new(
            recorder.clone(),
            "kept".into(),
            Some("hi".into()),
            crate::record::test_watch(),
        );
        recording.end(Outcome::Completed, Some(200), None);
        // Past the records' linger: their transaction fails and they wait for a retry.
        tokio::time::sleep(RECORDS_LINGER * 5).await;
        recorder
            .begin(start("meanwhile"))
            .await
            .expect("a start does not wait for failed records");

        sqlx::raw_sql(sqlx::AssertSqlSafe(rename("prompts_away", "prompts")))
            .execute(&mut admin)
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let page = loop {
            let page = store
                .interceptions(&InterceptionFilter::default())
                .await
                .unwrap();
            if page.items.iter().any(|i| i.outcome.is_some()) {
                break page;
            }
            assert!(Instant::now() < deadline, "the records were not retried");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let mut ids: Vec<&str> = page.items.iter().map(|i| i.id.as_str()).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["kept", "meanwhile"]);
        let kept = page.items.iter().find(|i| i.id == "kept").unwrap();
        assert_eq!(kept.prompts, ["hi"]);
        assert_eq!(kept.outcome.as_deref(), Some("completed"));

        sqlx::raw_sql(sqlx::AssertSqlSafe(rename("interceptions", "gone")))
            .execute(&mut admin)
            .await
            .unwrap();
        // Admitted before the writer knows: its start is queued, and its commit fails.
        recorder
            .begin(start("admitted"))
            .await
            .expect("a start is not waited for while commits succeed");
        recorder.flush().await;
        assert!(
            recorder.begin(start("refused")).await.is_err(),
            "after a failed commit, a start that cannot be written is refused"
        );
        // The database is back: the admitted request's start is written by the retry, and
        // starts are not waited for again once a commit succeeds.
        sqlx::raw_sql(sqlx::AssertSqlSafe(rename("gone", "interceptions")))
            .execute(&mut admin)
            .await
            .unwrap();
        recorder
            .begin(start("after"))
            .await
            .expect("a start is committed once the database is back");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            recorder.flush().await;
            let page = store
                .interceptions(&InterceptionFilter::default())
                .await
                .unwrap();
            let mut ids: Vec<&str> = page.items.iter().map(|i| i.id.as_str()).collect();
            ids.sort_unstable();
            if ids == ["admitted", "after", "kept", "meanwhile"] {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the admitted start was not retried: {ids:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        recorder.shutdown().await;
        store.close().await;
        admin.close().await.unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
}
