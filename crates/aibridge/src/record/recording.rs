//! The record of one request in flight: every attempt as it ends, what the answers said, and the
//! end, written exactly once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aibridge_keypool::Verdict;
use aibridge_protocol::Observation;
use aibridge_store::{
    AttemptRow, InterceptionEnded, PromptRow, Record, ThoughtRow, TokenUsageRow, ToolCallRow,
};

use super::Recorder;
use crate::error::GatewayError;
use crate::time::{millis, now_millis};

/// How a request ended. Stored as its string; the same words label the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The upstream answered with success and the answer reached the client whole.
    Completed,
    /// The upstream answered with an error that is not the key's fault; relayed.
    UpstreamError,
    /// Every key of the pool was cooling or disabled.
    Exhausted,
    /// The gateway could not complete the call (unreachable upstream, timeout, store down).
    GatewayError,
    /// A stream broke off after its first event.
    StreamFailed,
    /// The client went away before the answer was complete.
    ClientDisconnected,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::UpstreamError => "upstream_error",
            Self::Exhausted => "exhausted",
            Self::GatewayError => "gateway_error",
            Self::StreamFailed => "stream_failed",
            Self::ClientDisconnected => "client_disconnected",
        }
    }

    /// The outcome of a request the gateway answered with `error` itself.
    pub fn of_error(error: &GatewayError) -> Self {
        match error {
            GatewayError::Exhausted(_) => Self::Exhausted,
            _ => Self::GatewayError,
        }
    }
}

/// After a 401/403 from a pool key, what the check of the key found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheck {
    /// The provider rejects the key itself: disabled, failed over.
    Rejected,
    /// The provider takes the key: the request was at fault; relayed, no failover.
    Accepted,
    /// The check did not answer in time (or with a 5xx): counted as the key's fault.
    Inconclusive,
    /// The request was itself the key's check (a passthrough model list).
    Implied,
}

impl KeyCheck {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rejected => "rejected",
            Self::Accepted => "accepted",
            Self::Inconclusive => "inconclusive",
            Self::Implied => "implied",
        }
    }
}

/// What happened on one upstream attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    /// 1-based.
    pub number: u32,
    /// Masked hint of the pool key; `None` for BYOK.
    pub key_hint: Option<String>,
    pub status: Option<u16>,
    /// Set when the key was taken out of rotation for this answer.
    pub verdict: Option<Verdict>,
    pub transport_error: Option<String>,
    /// Set after a 401/403: what the check of the key found.
    pub key_check: Option<KeyCheck>,
    pub duration: Duration,
}

impl AttemptRecord {
    /// An attempt that took `duration` to get its answer (or its failure), which the caller
    /// fills in.
    pub fn sent(number: u32, key_hint: Option<String>, duration: Duration) -> Self {
        Self {
            number,
            key_hint,
            status: None,
            verdict: None,
            transport_error: None,
            key_check: None,
            duration,
        }
    }
}

#[derive(Debug)]
pub struct Recording {
    recorder: Arc<Recorder>,
    pub id: String,
    started: Instant,
    prompt: Option<String>,
    /// Attempts so far, and the key of the last one (the key that served, once one did).
    attempts: u32,
    key_hint: Option<String>,
    /// The `seq` of the next usage, prompt, tool call or thought row: with the id it names the
    /// row, so a retried write cannot count it twice.
    next_seq: u32,
    ended: bool,
}

impl Recording {
    pub fn new(recorder: Arc<Recorder>, id: String, prompt: Option<String>) -> Self {
        Self {
            recorder,
            id,
            started: Instant::now(),
            prompt,
            attempts: 0,
            key_hint: None,
            next_seq: 0,
            ended: false,
        }
    }

    /// One upstream attempt has ended; recorded now, so that a request abandoned later still
    /// shows every key it tried.
    pub fn attempt(&mut self, attempt: &AttemptRecord) {
        self.attempts = attempt.number;
        self.key_hint.clone_from(&attempt.key_hint);
        if !self.is_active() {
            return;
        }
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
            key_check: attempt.key_check.map(|check| check.as_str().to_string()),
            duration_ms: millis(attempt.duration),
            created_at: now_millis(),
        }));
    }

    fn seq(&mut self) -> u32 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Usage, prompt, tool calls and thoughts of an upstream response.
    pub fn observation(&mut self, observation: Observation) {
        let now = now_millis();
        let response_id = observation.response_id;
        if let Some(prompt) = self.prompt.take() {
            let record = Record::Prompt(PromptRow {
                interception_id: self.id.clone(),
                seq: self.seq(),
                provider_response_id: response_id.clone(),
                prompt,
                created_at: now,
            });
            self.recorder.record(record);
        }
        if let Some(usage) = observation.usage {
            let record = Record::TokenUsage(TokenUsageRow {
                interception_id: self.id.clone(),
                seq: self.seq(),
                provider_response_id: response_id.clone(),
                input: usage.input,
                output: usage.output,
                cache_read: usage.cache_read,
                cache_write: usage.cache_write,
                extra: usage.extra,
                created_at: now,
            });
            self.recorder.record(record);
        }
        for call in observation.tool_calls {
            let record = Record::ToolCall(ToolCallRow {
                interception_id: self.id.clone(),
                seq: self.seq(),
                provider_response_id: response_id.clone(),
                tool_call_id: call.id,
                name: call.name,
                input: call.input,
                injected: false,
                created_at: now,
            });
            self.recorder.record(record);
        }
        for thought in observation.thoughts {
            let record = Record::Thought(ThoughtRow {
                interception_id: self.id.clone(),
                seq: self.seq(),
                content: thought.content,
                source: thought.source.to_string(),
                created_at: now,
            });
            self.recorder.record(record);
        }
    }

    /// Ends the record; later calls do nothing.
    pub fn end(&mut self, outcome: Outcome, status: Option<u16>, error: Option<String>) {
        if self.ended {
            return;
        }
        self.ended = true;
        // A prompt is worth keeping even when no response came back.
        if let Some(prompt) = self.prompt.take() {
            let record = Record::Prompt(PromptRow {
                interception_id: self.id.clone(),
                seq: self.seq(),
                provider_response_id: None,
                prompt,
                created_at: now_millis(),
            });
            self.recorder.record(record);
        }
        self.recorder.record(Record::Ended(InterceptionEnded {
            id: self.id.clone(),
            ended_at: now_millis(),
            duration_ms: millis(self.started.elapsed()),
            status,
            outcome: outcome.as_str().to_string(),
            key_hint: self.key_hint.clone(),
            attempts: self.attempts,
            error,
        }));
    }

    /// The gateway answered the request with `error` itself (pool exhausted, transport error, …).
    pub fn failed(&mut self, error: &GatewayError) {
        self.end(
            Outcome::of_error(error),
            Some(error.status().as_u16()),
            Some(error.to_string()),
        );
    }

    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// False when recording is off: bodies need not be observed for this request.
    pub fn is_active(&self) -> bool {
        self.recorder.enabled()
    }
}

impl Recording {
    /// The client went away before its answer; `status` is what the upstream had answered, if
    /// anything yet.
    pub fn client_left(&mut self, status: Option<u16>) {
        self.end(
            Outcome::ClientDisconnected,
            status,
            Some("the client went away before the answer".to_string()),
        );
    }
}

impl Drop for Recording {
    /// A request whose handler is dropped before it ended (the client went away while waiting for
    /// a blocking answer) still gets an end, with the attempts made so far.
    fn drop(&mut self) {
        self.client_left(None);
    }
}
