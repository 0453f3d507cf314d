//! The SQLite write path for interceptions and their records.
//!
//! sqlx's SQLite driver hands every statement to its worker thread and waits for the answer; a
//! recorded request is five statements, so those hand-offs cost more CPU than the rest of the
//! gateway's work on the request. Here one connection lives on a thread of its own and writes a
//! whole batch per hand-off, with prepared statements.
//!
//! Checkpoints (copying the WAL back into the database file, with an fsync) would otherwise
//! run inside whichever commit crosses the WAL size limit, and that commit may carry the start
//! of a request waiting to go upstream. Automatic checkpoints are off on the write connections;
//! a second thread checkpoints every [`CHECKPOINT_EVERY`] without blocking the writer. Under
//! steady writes such a checkpoint never catches up with the last frames, and SQLite reuses
//! the WAL from its start only once every frame is copied: so when the WAL has grown past
//! [`RESTART_AFTER_BYTES`], the writer copies the few remaining frames itself, at a moment
//! when no batch is waiting, and its next transaction starts the WAL over.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use foldhash::fast::RandomState;
use rusqlite::types::ToSqlOutput;
use rusqlite::{Connection, ErrorCode, OpenFlags, Statement, ToSql, params, params_from_iter};
use tokio::sync::oneshot;

use crate::backend::sql::{self, BatchShape, WholeEnd, batch_outcome, unknown_interception};
use crate::error::{RecordFailure, StoreError};
use crate::types::{
    CredentialKind, InterceptionEnded, NewInterception, Record, RequestKind, Totals, WriteBatch,
};

/// How often the WAL is copied back into the database file. Each checkpoint syncs the WAL and
/// the file; on a small machine that kernel work competes with the gateway for the CPU, and
/// short frequent checkpoints delay a request less than long rare ones, down to the cost of
/// the syncs themselves (single runs on 2 cores, p99 at 1,000 recorded requests/s: 1.3–1.6 ms
/// every 250 ms, 1.7 ms every 100 ms, 1.8–2.0 ms every second).
pub(crate) const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// The WAL's size after which the writer completes a checkpoint itself (counted in frames, one
/// page each, of the file's page size). That checkpoint syncs the WAL and the database file
/// while records wait, so it should be rare: every several seconds at 1,000 recorded
/// requests/s.
const RESTART_AFTER_BYTES: i64 = 64 << 20;

/// Requests the writer remembers as started and not yet ended, at most: beyond it the set is
/// forgotten and their records are written with the existence check again.
const MAX_OPEN: usize = 100_000;

/// The same busy timeout as the sqlx connections: waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A statement of the write path (`ThoughtAfterStart` last: it sets the count).
#[derive(Clone, Copy)]
enum Sql {
    Begin,
    Commit,
    InsertInterception,
    InsertEndedInterception,
    EndInterception,
    EndInterceptionTotaled,
    InterceptionExists,
    Attempt,
    TokenUsage,
    Prompt,
    ToolCall,
    Thought,
    AttemptAfterStart,
    TokenUsageAfterStart,
    PromptAfterStart,
    ToolCallAfterStart,
    ThoughtAfterStart,
}

impl Sql {
    const COUNT: usize = Sql::ThoughtAfterStart as usize + 1;

    fn text(self) -> &'static str {
        match self {
            // Takes the write lock up front (waiting up to the busy timeout for another
            // process), instead of failing with `SQLITE_BUSY` at the first write.
            Sql::Begin => "BEGIN IMMEDIATE",
            Sql::Commit => "COMMIT",
            Sql::InsertInterception => sql::INSERT_INTERCEPTION,
            Sql::InsertEndedInterception => sql::INSERT_ENDED_INTERCEPTION,
            Sql::EndInterception => sql::END_INTERCEPTION,
            Sql::EndInterceptionTotaled => sql::END_INTERCEPTION_TOTALED_SQLITE,
            Sql::InterceptionExists => sql::INTERCEPTION_EXISTS,
            Sql::Attempt => sql::INSERT_ATTEMPT.checked,
            Sql::TokenUsage => sql::INSERT_TOKEN_USAGE.checked,
            Sql::Prompt => sql::INSERT_PROMPT.checked,
            Sql::ToolCall => sql::INSERT_TOOL_CALL.checked,
            Sql::Thought => sql::INSERT_THOUGHT.checked,
            Sql::AttemptAfterStart => sql::INSERT_ATTEMPT.after_start,
            Sql::TokenUsageAfterStart => sql::INSERT_TOKEN_USAGE.after_start,
            Sql::PromptAfterStart => sql::INSERT_PROMPT.after_start,
            Sql::ToolCallAfterStart => sql::INSERT_TOOL_CALL.after_start,
            Sql::ThoughtAfterStart => sql::INSERT_THOUGHT.after_start,
        }
    }
}

/// The write statements of the writer's connection, each prepared the first time it is used
/// and kept for the connection's life: a recorded request is several statements, and looking
/// each one up in a statement cache by its text (and handing it back) cost more than a tenth
/// of the writer's work. Prepared one by one, so that a statement whose table is missing fails
/// only the batches that need it.
struct Statements<'c> {
    conn: &'c Connection,
    prepared: [Option<Statement<'c>>; Sql::COUNT],
}

impl<'c> Statements<'c> {
    fn new(conn: &'c Connection) -> Self {
        Self {
            conn,
            prepared: std::array::from_fn(|_| None),
        }
    }

    fn get(&mut self, which: Sql) -> rusqlite::Result<&mut Statement<'c>> {
        let slot = &mut self.prepared[which as usize];
        let statement = match slot.take() {
            Some(statement) => statement,
            None => self.conn.prepare(&sql::numbered(which.text()))?,
        };
        Ok(slot.insert(statement))
    }
}

struct Job {
    batch: Arc<WriteBatch>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The writer and checkpointer threads of one SQLite file. Both stop when this is closed or
/// dropped.
#[derive(Debug)]
pub(crate) struct SqliteWriter {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    stop_checkpoints: Mutex<Option<mpsc::Sender<()>>>,
    /// Each thread answers here when it has ended (its connection closed).
    finished: Mutex<Vec<oneshot::Receiver<()>>>,
}

impl SqliteWriter {
    /// Opens the write and checkpoint connections of an existing WAL-mode database file.
    pub(crate) fn open(path: &Path) -> Result<Self, StoreError> {
        // Foreign keys are not enforced on the writer: every child insert checks that its
        // interception exists (or follows its start in the same transaction) and nothing here
        // deletes, so the check would only look the parent up a second time.
        let writer = connect(path)?;
        let checkpointer = connect(path)?;
        let page_size: i64 = checkpointer
            .query_row("PRAGMA page_size", [], |row| row.get(0))
            .map_err(db)?;
        let restart_after_frames = RESTART_AFTER_BYTES / page_size.max(512);

        let wal_is_long = Arc::new(AtomicBool::new(false));

        let (jobs, job_queue) = mpsc::channel();
        let (writer_done, writer_finished) = oneshot::channel();
        let restart_wanted = wal_is_long.clone();
        spawn("sqlite-writer", move || {
            write_jobs(writer, &job_queue, &restart_wanted);
            let _ = writer_done.send(());
        })?;

        let (stop_checkpoints, stop) = mpsc::channel();
        let (checkpointer_done, checkpointer_finished) = oneshot::channel();
        spawn("sqlite-ckpt", move || {
            checkpoint_periodically(&checkpointer, &stop, &wal_is_long, restart_after_frames);
            drop(checkpointer);
            let _ = checkpointer_done.send(());
        })?;

        Ok(Self {
            jobs: Mutex::new(Some(jobs)),
            stop_checkpoints: Mutex::new(Some(stop_checkpoints)),
            finished: Mutex::new(vec![writer_finished, checkpointer_finished]),
        })
    }

    /// Writes the batch in one transaction on the writer thread.
    pub(crate) async fn commit(&self, batch: Arc<WriteBatch>) -> Result<(), StoreError> {
        let (done, answer) = oneshot::channel();
        let sent = lock(&self.jobs)
            .as_ref()
            .is_some_and(|jobs| jobs.send(Job { batch, done }).is_ok());
        if !sent {
            return Err(StoreError::Database("the store is closed".into()));
        }
        answer
            .await
            .map_err(|_| StoreError::Database("the SQLite writer stopped".into()))?
    }

    /// Lets the writer finish the batches already handed to it, then stops both threads and
    /// waits until their connections are closed.
    pub(crate) async fn close(&self) {
        lock(&self.jobs).take();
        lock(&self.stop_checkpoints).take();
        let finished = std::mem::take(&mut *lock(&self.finished));
        for thread in finished {
            let _ = thread.await;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> Result<(), StoreError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(body)
        .map(drop)
        .map_err(|e| StoreError::Database(format!("cannot start the {name} thread: {e}")))
}

fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(db)?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(db)?;
    Ok(conn)
}

fn write_jobs(conn: Connection, jobs: &mpsc::Receiver<Job>, restart_wanted: &AtomicBool) {
    let mut statements = Statements::new(&conn);
    let mut open = OpenRequests::default();
    let mut next = jobs.recv().ok();
    while let Some(Job { batch, done }) = next {
        let result = write(&mut statements, &batch, &mut open);
        // Released before answering, so that the caller can take the batch back to retry it.
        drop(batch);
        let _ = done.send(result);
        next = match jobs.try_recv() {
            Ok(job) => Some(job),
            Err(mpsc::TryRecvError::Disconnected) => None,
            Err(mpsc::TryRecvError::Empty) => {
                if restart_wanted.swap(false, Ordering::Relaxed) {
                    checkpoint(&conn);
                }
                jobs.recv().ok()
            }
        };
    }
}

/// The requests whose start this writer committed and whose end it has not: their rows exist
/// (nothing deletes interceptions; a retention job would have to leave unended ones alone), so
/// their records are inserted without looking the row up first. That look-up (`INSERT …
/// SELECT … WHERE EXISTS`) also made SQLite keep a statement journal for every record of a
/// request that started in an earlier batch, which is every request with a real upstream:
/// together ~6 % of a recorded request's instructions in that regime (callgrind with the fake
/// upstream waiting 50 ms: 232k instead of 246k per request).
#[derive(Default)]
struct OpenRequests {
    ids: HashSet<String, RandomState>,
}

impl OpenRequests {
    fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// After `batch` was committed: its starts that did not end in it are open, its ends close
    /// theirs.
    fn committed(&mut self, batch: &WriteBatch, whole: &HashMap<&str, WholeEnd<'_>, RandomState>) {
        if self.ids.len() + batch.starts.len() > MAX_OPEN {
            self.ids.clear();
        }
        for start in &batch.starts {
            if !whole.contains_key(start.id.as_str()) {
                self.ids.insert(start.id.clone());
            }
        }
        for record in &batch.records {
            if let Record::Ended(ended) = record {
                self.ids.remove(ended.id.as_str());
            }
        }
    }
}

/// `PASSIVE`: copies what it can without waiting for (or blocking) the writer and readers.
fn checkpoint_periodically(
    conn: &Connection,
    stop: &mpsc::Receiver<()>,
    wal_is_long: &AtomicBool,
    restart_after_frames: i64,
) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        if let Some(frames) = checkpoint(conn)
            && frames >= restart_after_frames
        {
            wal_is_long.store(true, Ordering::Relaxed);
        }
    }
}

/// A `PASSIVE` checkpoint; the frames in the WAL, when it worked.
fn checkpoint(conn: &Connection) -> Option<i64> {
    let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1));
    match result {
        Ok(frames) => Some(frames),
        Err(e) => {
            tracing::warn!(error = %db_message(&e), "SQLite checkpoint failed");
            None
        }
    }
}

/// The same rules as the sqlx path (`shared.rs`): starts all or none; a record that fails on
/// its own is isolated with savepoints so that only it is lost. A transaction that fails is
/// rolled back, and the caller retries the batch whole.
fn write(
    statements: &mut Statements<'_>,
    batch: &WriteBatch,
    open: &mut OpenRequests,
) -> Result<(), StoreError> {
    if batch.is_empty() {
        return Ok(());
    }
    let conn = statements.conn;
    let result = write_batch(statements, batch, open);
    if result.is_err()
        && !conn.is_autocommit()
        && let Err(e) = conn.execute_batch("ROLLBACK")
    {
        tracing::warn!(error = %db_message(&e), "SQLite rollback failed");
    }
    result
}

fn write_batch(
    statements: &mut Statements<'_>,
    batch: &WriteBatch,
    open: &mut OpenRequests,
) -> Result<(), StoreError> {
    let conn = statements.conn;
    let mut failures = Vec::new();
    statements
        .get(Sql::Begin)
        .and_then(|s| s.execute([]))
        .map_err(db)?;
    let BatchShape { started, whole } = BatchShape::of(batch);
    for start in &batch.starts {
        match whole.get(start.id.as_str()) {
            Some(end) => insert_ended_interception(statements, start, end).map_err(db)?,
            None => insert_interception(statements, start).map_err(db)?,
        }
    }
    let mut clean = true;
    for (index, record) in batch.records.iter().enumerate() {
        if let Record::Ended(ended) = record
            && whole.contains_key(ended.id.as_str())
        {
            // Written with its start.
            continue;
        }
        let id = record.interception_id();
        let after_start = started.contains(id) || open.contains(id);
        match write_record(statements, record, after_start) {
            Ok(true) => {}
            Ok(false) => failures.push(unknown_interception(index, record)),
            Err(e) if is_record_error(&e) => {
                clean = false;
                break;
            }
            Err(e) => return Err(db(e)),
        }
    }
    if clean {
        statements
            .get(Sql::Commit)
            .and_then(|s| s.execute([]))
            .map_err(db)?;
        open.committed(batch, &whole);
        return batch_outcome(batch, failures);
    }
    conn.execute_batch("ROLLBACK").map_err(db)?;
    failures.clear();
    statements
        .get(Sql::Begin)
        .and_then(|s| s.execute([]))
        .map_err(db)?;
    for start in &batch.starts {
        insert_interception(statements, start).map_err(db)?;
    }
    for (index, record) in batch.records.iter().enumerate() {
        conn.execute_batch("SAVEPOINT record").map_err(db)?;
        match write_record(statements, record, false) {
            Ok(written) => {
                conn.execute_batch("RELEASE record").map_err(db)?;
                if !written {
                    failures.push(unknown_interception(index, record));
                }
            }
            Err(e) if is_record_error(&e) => {
                conn.execute_batch("ROLLBACK TO record; RELEASE record")
                    .map_err(db)?;
                failures.push(RecordFailure {
                    index,
                    kind: record.kind(),
                    interception_id: record.interception_id().to_owned(),
                    reason: db_message(&e),
                });
            }
            Err(e) => return Err(db(e)),
        }
    }
    statements
        .get(Sql::Commit)
        .and_then(|s| s.execute([]))
        .map_err(db)?;
    open.committed(batch, &HashMap::default());
    batch_outcome(batch, failures)
}

/// The start's columns, the first fourteen parameters of both interception inserts.
fn start_columns(r: &NewInterception) -> [&dyn ToSql; 14] {
    [
        &r.id,
        &r.user,
        &r.kind,
        &r.provider_type,
        &r.provider_name,
        &r.method,
        &r.route,
        &r.model,
        &r.streaming,
        &r.client,
        &r.session_id,
        &r.user_agent,
        &r.credential,
        &r.started_at,
    ]
}

impl ToSql for RequestKind {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

impl ToSql for CredentialKind {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

fn insert_ended_interception(
    statements: &mut Statements<'_>,
    r: &NewInterception,
    end: &WholeEnd<'_>,
) -> rusqlite::Result<()> {
    statements
        .get(Sql::InsertEndedInterception)?
        .execute(params_from_iter(
            start_columns(r)
                .into_iter()
                .chain(end_columns(end.ended))
                .chain(totals_columns(&end.totals)),
        ))?;
    Ok(())
}

/// The end's columns, in the order of both the interception's whole insert and the end's update
/// (which puts the id first).
fn end_columns(e: &InterceptionEnded) -> [&dyn ToSql; 7] {
    [
        &e.ended_at,
        &e.duration_ms,
        &e.status,
        &e.outcome,
        &e.key_hint,
        &e.attempts,
        &e.error,
    ]
}

fn totals_columns(t: &Totals) -> [&dyn ToSql; 5] {
    [
        &t.input,
        &t.output,
        &t.cache_read,
        &t.cache_write,
        &t.failovers,
    ]
}

fn insert_interception(
    statements: &mut Statements<'_>,
    r: &NewInterception,
) -> rusqlite::Result<()> {
    statements
        .get(Sql::InsertInterception)?
        .execute(&start_columns(r)[..])?;
    Ok(())
}

/// Writes one record (a repeat writes nothing and counts as written); `Ok(false)` when its
/// interception does not exist. `after_start`: its interception starts in this transaction, so
/// its existence needs no check.
fn write_record(
    statements: &mut Statements<'_>,
    record: &Record,
    after_start: bool,
) -> rusqlite::Result<bool> {
    let insert = |checked, known| if after_start { known } else { checked };
    let changed = match record {
        Record::Ended(r) => {
            let id: [&dyn ToSql; 1] = [&r.id];
            let end = id.into_iter().chain(end_columns(r));
            match &r.totals {
                Some(t) => statements
                    .get(Sql::EndInterceptionTotaled)?
                    .execute(params_from_iter(end.chain(totals_columns(t))))?,
                None => statements
                    .get(Sql::EndInterception)?
                    .execute(params_from_iter(end))?,
            }
        }
        Record::Attempt(r) => statements
            .get(insert(Sql::Attempt, Sql::AttemptAfterStart))?
            .execute(params![
                r.interception_id,
                r.number,
                r.key_hint,
                r.status,
                r.transport_error,
                r.failover_reason,
                r.cooldown_ms,
                r.duration_ms,
                r.created_at,
                r.key_check,
            ])?,
        Record::TokenUsage(r) => statements
            .get(insert(Sql::TokenUsage, Sql::TokenUsageAfterStart))?
            .execute(params![
                r.interception_id,
                r.provider_response_id,
                r.input,
                r.output,
                r.cache_read,
                r.cache_write,
                sql::extra_json(&r.extra),
                r.created_at,
                r.seq,
            ])?,
        Record::Prompt(r) => statements
            .get(insert(Sql::Prompt, Sql::PromptAfterStart))?
            .execute(params![
                r.interception_id,
                r.provider_response_id,
                r.prompt,
                r.created_at,
                r.seq,
            ])?,
        Record::ToolCall(r) => statements
            .get(insert(Sql::ToolCall, Sql::ToolCallAfterStart))?
            .execute(params![
                r.interception_id,
                r.provider_response_id,
                r.tool_call_id,
                r.name,
                r.input,
                r.injected,
                r.created_at,
                r.seq,
                r.run.as_ref().map(|run| &run.server_name),
                r.run.as_ref().map(|run| &run.server_url),
                r.run.as_ref().map(|run| &run.tool_name),
                r.run.as_ref().and_then(|run| run.result.as_ref()),
                r.run.as_ref().and_then(|run| run.error.as_ref()),
                r.run.as_ref().map(|run| run.duration_ms),
            ])?,
        Record::Thought(r) => statements
            .get(insert(Sql::Thought, Sql::ThoughtAfterStart))?
            .execute(params![
                r.interception_id,
                r.content,
                r.source,
                r.created_at,
                r.seq,
            ])?,
    };
    if changed > 0 || after_start {
        return Ok(true);
    }
    // Nothing written: a repeat of a row already there, or a record of an unknown interception.
    let exists = statements
        .get(Sql::InterceptionExists)?
        .exists(params![record.interception_id()])?;
    Ok(exists && !matches!(record, Record::Ended(_)))
}

/// An error caused by the record itself, after which the other records can still be written;
/// anything else (I/O, a full disk, a lost lock) fails the batch.
fn is_record_error(err: &rusqlite::Error) -> bool {
    match err {
        rusqlite::Error::SqliteFailure(failure, _) => matches!(
            failure.code,
            ErrorCode::ConstraintViolation | ErrorCode::TypeMismatch | ErrorCode::TooBig
        ),
        rusqlite::Error::ToSqlConversionFailure(_) => true,
        _ => false,
    }
}

fn db(err: rusqlite::Error) -> StoreError {
    StoreError::Database(db_message(&err))
}

/// SQLite's message; rusqlite's errors never include bound values.
fn db_message(err: &rusqlite::Error) -> String {
    match err {
        rusqlite::Error::SqliteFailure(_, Some(message)) => message.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(id: &str) -> NewInterception {
        NewInterception {
            id: id.to_owned(),
            user: "u".into(),
            kind: RequestKind::Bridged,
            provider_type: "anthropic".into(),
            provider_name: "anthropic".into(),
            method: "POST".into(),
            route: "/v1/messages".into(),
            model: None,
            streaming: false,
            client: None,
            session_id: None,
            user_agent: None,
            credential: CredentialKind::Pool,
            started_at: 0,
        }
    }

    fn end(id: &str) -> Record {
        Record::Ended(InterceptionEnded {
            id: id.to_owned(),
            ended_at: 1,
            duration_ms: 1,
            status: Some(200),
            outcome: "completed".into(),
            key_hint: None,
            attempts: 1,
            error: None,
            totals: None,
        })
    }

    fn batch(starts: &[&str], ends: &[&str]) -> WriteBatch {
        WriteBatch {
            starts: starts.iter().map(|id| start(id)).collect(),
            records: ends.iter().map(|id| end(id)).collect(),
        }
    }

    fn commit(open: &mut OpenRequests, batch: &WriteBatch) {
        let BatchShape { whole, .. } = BatchShape::of(batch);
        open.committed(batch, &whole);
    }

    #[test]
    fn a_request_is_open_from_its_committed_start_to_its_end() {
        let mut open = OpenRequests::default();
        commit(&mut open, &batch(&["a", "b", "whole"], &["whole"]));
        assert!(open.contains("a") && open.contains("b"));
        assert!(
            !open.contains("whole"),
            "started and ended in one batch: never open"
        );
        assert!(!open.contains("unknown"));

        commit(&mut open, &batch(&[], &["a"]));
        assert!(!open.contains("a"));
        assert!(open.contains("b"));
    }

    #[test]
    fn too_many_open_requests_are_forgotten() {
        let mut open = OpenRequests::default();
        let ids: Vec<String> = (0..MAX_OPEN).map(|n| n.to_string()).collect();
        let first: Vec<&str> = ids.iter().map(String::as_str).collect();
        commit(&mut open, &batch(&first, &[]));
        assert!(open.contains("0"));
        commit(&mut open, &batch(&["late"], &[]));
        assert!(
            !open.contains("0"),
            "forgotten: written with the check again"
        );
        assert!(open.contains("late"));
    }
}
