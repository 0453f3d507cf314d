//! Where a request is recorded. The start of every interception is written before the upstream
//! call (a request that cannot be recorded is refused); everything else — attempts, usage,
//! prompts, tool calls, thoughts, the end — goes through a channel to a background writer that
//! stores it in batches, off the request path, and is drained on shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aibridge_keypool::Verdict;
use aibridge_protocol::Observation;
use aibridge_store::{
    AttemptRow, InterceptionEnded, NewInterception, PromptRow, Record, Store, StoreError,
    ThoughtRow, TokenUsageRow, ToolCallRow, UnixMillis,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::error::GatewayError;
use crate::failover::AttemptRecord;

/// Records per write transaction, at most.
const MAX_BATCH: usize = 512;

pub fn now_millis() -> UnixMillis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[derive(Debug)]
pub struct Recorder {
    store: Arc<dyn Store>,
    // Unbounded on purpose: records are small, and a bounded queue would have to either drop
    // records or stall requests (and streams ending in `Drop`, which cannot wait) when the
    // database is slow. The writer drains it as fast as the database allows.
    tx: mpsc::UnboundedSender<Record>,
    starts: mpsc::UnboundedSender<StartTicket>,
    stop: CancellationToken,
    writer: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// `record_requests = false`: nothing is written (benchmarks, or deployments that must not
    /// keep prompts).
    enabled: bool,
}

impl Recorder {
    /// Starts the background writer (a recorder that is not `enabled` writes nothing).
    pub fn start(store: Arc<dyn Store>, enabled: bool) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let writer = tokio::spawn(write_batches(store.clone(), rx, stop.clone()));
        let (starts, starts_rx) = mpsc::unbounded_channel();
        tokio::spawn(write_starts(store.clone(), starts_rx));
        Arc::new(Self {
            store,
            tx,
            starts,
            stop,
            writer: std::sync::Mutex::new(Some(writer)),
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

    /// Writes the start of an interception now; the request must not go on if this fails.
    /// Starts that arrive together are committed together (group commit): one transaction for
    /// many requests instead of one each, which is what SQLite's single writer needs under load.
    pub async fn begin(&self, record: NewInterception) -> Result<(), StoreError> {
        if !self.enabled {
            return Ok(());
        }
        let (done, committed) = oneshot::channel();
        self.starts
            .send((record, done))
            .map_err(|_| StoreError::Database("the recorder has stopped".into()))?;
        committed
            .await
            .map_err(|_| StoreError::Database("the recorder has stopped".into()))?
    }

    /// Queues a record for the background writer. Never blocks.
    pub fn record(&self, record: Record) {
        if self.enabled && self.tx.send(record).is_err() {
            tracing::error!("recorder already stopped: a record was not written");
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

/// A start to write, and where to say whether it was committed.
type StartTicket = (NewInterception, oneshot::Sender<Result<(), StoreError>>);

/// Starts per transaction, at most.
const MAX_STARTS: usize = 256;

async fn write_starts(store: Arc<dyn Store>, mut rx: mpsc::UnboundedReceiver<StartTicket>) {
    let mut tickets = Vec::with_capacity(MAX_STARTS);
    while rx.recv_many(&mut tickets, MAX_STARTS).await > 0 {
        let (records, waiters): (Vec<_>, Vec<_>) = tickets.drain(..).unzip();
        let result = match records.as_slice() {
            [one] => store.start_interception(one).await,
            many => store.start_interceptions(many).await,
        };
        let failure = result.err().map(|e| e.to_string());
        for waiter in waiters {
            let answer = match &failure {
                None => Ok(()),
                Some(message) => Err(StoreError::Database(message.clone())),
            };
            // A waiter that is gone (the client left) needs no answer.
            let _ = waiter.send(answer);
        }
    }
}

async fn write_batches(
    store: Arc<dyn Store>,
    mut rx: mpsc::UnboundedReceiver<Record>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let received = tokio::select! {
            n = rx.recv_many(&mut batch, MAX_BATCH) => n,
            () = stop.cancelled() => {
                // Drain what is queued; requests have finished by now.
                while let Ok(record) = rx.try_recv() {
                    batch.push(record);
                }
                if !batch.is_empty() {
                    write_with_retry(&store, &batch, true).await;
                }
                return;
            }
        };
        if received == 0 {
            return;
        }
        write_with_retry(&store, &batch, false).await;
        batch.clear();
    }
}

/// A batch the store partly refused is not retried: its other records were committed and a retry
/// would count them twice. Any other failure rolled the whole transaction back, so the batch is
/// retried with back-off while the database is unreachable (bounded on shutdown).
async fn write_with_retry(store: &Arc<dyn Store>, batch: &[Record], shutting_down: bool) {
    let mut delay = Duration::from_millis(100);
    let mut tries = 0u32;
    loop {
        match store.write_batch(batch).await {
            Ok(()) => return,
            Err(error) => {
                tries += 1;
                let partly_written = matches!(error, StoreError::PartialBatch { .. });
                let give_up = partly_written || (shutting_down && tries >= 5);
                tracing::error!(
                    records = batch.len(),
                    error = %error,
                    retrying = !give_up,
                    "could not write records"
                );
                if give_up {
                    return;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// The record of one request in flight: collects what happens and writes the end exactly once.
#[derive(Debug)]
pub struct Recording {
    recorder: Arc<Recorder>,
    pub id: String,
    started: Instant,
    prompt: Option<String>,
    ended: bool,
}

/// How a request ended, for the record.
#[derive(Debug, Clone)]
pub struct Ending {
    pub status: Option<u16>,
    pub outcome: &'static str,
    pub key_hint: Option<String>,
    pub attempts: u32,
    pub error: Option<String>,
}

impl Recording {
    pub fn new(recorder: Arc<Recorder>, id: String, prompt: Option<String>) -> Self {
        Self {
            recorder,
            id,
            started: Instant::now(),
            prompt,
            ended: false,
        }
    }

    pub fn attempts(&self, attempts: &[AttemptRecord]) {
        let now = now_millis();
        for attempt in attempts {
            let (failover_reason, cooldown_ms) = match attempt.verdict {
                Some(Verdict::RateLimited { cooldown, .. }) => {
                    (Some("rate_limited".to_string()), Some(millis(cooldown)))
                }
                Some(Verdict::Rejected { reason }) => (Some(reason.as_str().to_string()), None),
                Some(Verdict::NotKeySpecific) | None => (None, None),
            };
            self.recorder.record(Record::Attempt(AttemptRow {
                interception_id: self.id.clone(),
                number: attempt.number,
                key_hint: attempt.key_hint.clone(),
                status: attempt.status,
                transport_error: attempt.transport_error.clone(),
                failover_reason,
                cooldown_ms,
                duration_ms: millis(attempt.duration),
                created_at: now,
            }));
        }
    }

    /// Usage, prompt, tool calls and thoughts of an upstream response.
    pub fn observation(&mut self, observation: Observation) {
        let now = now_millis();
        let response_id = observation.response_id;
        if let Some(prompt) = self.prompt.take() {
            self.recorder.record(Record::Prompt(PromptRow {
                interception_id: self.id.clone(),
                provider_response_id: response_id.clone(),
                prompt,
                created_at: now,
            }));
        }
        if let Some(usage) = observation.usage {
            self.recorder.record(Record::TokenUsage(TokenUsageRow {
                interception_id: self.id.clone(),
                provider_response_id: response_id.clone(),
                input: usage.input,
                output: usage.output,
                cache_read: usage.cache_read,
                cache_write: usage.cache_write,
                extra: usage.extra,
                created_at: now,
            }));
        }
        for call in observation.tool_calls {
            self.recorder.record(Record::ToolCall(ToolCallRow {
                interception_id: self.id.clone(),
                provider_response_id: response_id.clone(),
                tool_call_id: call.id,
                name: call.name,
                input: call.input,
                injected: false,
                created_at: now,
            }));
        }
        for thought in observation.thoughts {
            self.recorder.record(Record::Thought(ThoughtRow {
                interception_id: self.id.clone(),
                content: thought.content,
                source: thought.source.to_string(),
                created_at: now,
            }));
        }
    }

    pub fn end(&mut self, ending: Ending) {
        if self.ended {
            return;
        }
        self.ended = true;
        // A prompt is worth keeping even when no response came back.
        if let Some(prompt) = self.prompt.take() {
            self.recorder.record(Record::Prompt(PromptRow {
                interception_id: self.id.clone(),
                provider_response_id: None,
                prompt,
                created_at: now_millis(),
            }));
        }
        self.recorder.record(Record::Ended(InterceptionEnded {
            id: self.id.clone(),
            ended_at: now_millis(),
            duration_ms: millis(self.started.elapsed()),
            status: ending.status,
            outcome: ending.outcome.to_string(),
            key_hint: ending.key_hint,
            attempts: ending.attempts,
            error: ending.error,
        }));
    }

    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// False when recording is off: bodies need not be observed for this request.
    pub fn is_active(&self) -> bool {
        self.recorder.enabled()
    }

    /// The upstream call failed as a whole (pool exhausted, transport error, …).
    pub fn failed(&mut self, error: &GatewayError, attempts: &[AttemptRecord]) {
        self.attempts(attempts);
        self.end(Ending {
            status: Some(error.status().as_u16()),
            outcome: match error {
                GatewayError::Exhausted(_) => "exhausted",
                _ => "gateway_error",
            },
            key_hint: attempts.last().and_then(|a| a.key_hint.clone()),
            attempts: attempts.len() as u32,
            error: Some(error.to_string()),
        });
    }
}

impl Drop for Recording {
    /// A request whose handler is dropped before it ended (the client went away while waiting for
    /// a blocking answer) still gets an end.
    fn drop(&mut self) {
        if !self.ended {
            self.end(Ending {
                status: None,
                outcome: "client_disconnected",
                key_hint: None,
                attempts: 0,
                error: Some("the client went away before the answer".to_string()),
            });
        }
    }
}
