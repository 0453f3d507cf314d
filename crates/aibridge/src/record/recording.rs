//! The record of one request in flight: every attempt as it ends, what the answers said, and the
//! end, written exactly once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aibridge_keypool::{PoolKey, Verdict};
use aibridge_protocol::Observation;
use aibridge_store::{
    AttemptRow, InterceptionEnded, PromptRow, Record, ThoughtRow, TokenUsageRow, ToolCallRow,
    ToolRun, Totals,
};

use super::Recorder;
use crate::breaker::Permit;
use crate::error::GatewayError;
pub use crate::outcome::Outcome;
use crate::telemetry::tally::{Ending, RequestTally};
use crate::time::{millis, now_millis};

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
    /// The answer named the key as the fault (a Bedrock credential refused by name).
    Named,
}

impl KeyCheck {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rejected => "rejected",
            Self::Accepted => "accepted",
            Self::Inconclusive => "inconclusive",
            Self::Implied => "implied",
            Self::Named => "named",
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
    /// The pool key's index; `None` for BYOK.
    pub key_index: Option<usize>,
    pub status: Option<u16>,
    /// Set when the key was taken out of rotation for this answer.
    pub verdict: Option<Verdict>,
    pub transport_error: Option<String>,
    /// Set after a 401/403: what the check of the key found.
    pub key_check: Option<KeyCheck>,
    pub duration: Duration,
}

impl AttemptRecord {
    /// An attempt with `key` (`None`: the client's own) that took `duration` to get its answer
    /// (or its failure), which the caller fills in.
    pub fn sent(number: u32, key: Option<&PoolKey>, duration: Duration) -> Self {
        Self {
            number,
            key_hint: key.map(|key| key.hint().to_owned()),
            key_index: key.map(|key| key.index),
            status: None,
            verdict: None,
            transport_error: None,
            key_check: None,
            duration,
        }
    }
}

/// What travels with a request beside its record: its metrics and log line, its breaker
/// permit, and what they are labelled with.
#[derive(Debug)]
pub struct Watch {
    pub tally: RequestTally,
    /// Set when a circuit breaker let the request through; it is told the status the client got.
    pub permit: Option<Permit>,
    /// The client's model, for tokens and the log line.
    pub model: Option<String>,
    /// Whether pool keys pay (BYOK requests are not observed by the failover histogram).
    pub pool_paid: bool,
    /// The request's span (exported as its trace's server span): what the request ended with
    /// is recorded on it.
    pub span: tracing::Span,
}

impl Watch {
    pub fn new(tally: RequestTally) -> Self {
        Self {
            tally,
            permit: None,
            model: None,
            pool_paid: false,
            span: tracing::Span::none(),
        }
    }

    /// The request ended before its record could begin.
    pub fn refused(mut self, request_id: &str, error: &GatewayError) {
        let message = error.to_string();
        self.tally.finish(
            error.outcome(),
            &Ending {
                request_id,
                model: self.model.as_deref(),
                status: Some(error.status().as_u16()),
                error: Some(&message),
                ..Ending::default()
            },
        );
    }
}

#[derive(Debug)]
pub struct Recording {
    recorder: Arc<Recorder>,
    pub id: String,
    started: Instant,
    prompt: Option<String>,
    watch: Watch,
    /// Attempts so far, and the key of the last one (the key that served, once one did).
    attempts: u32,
    key_hint: Option<String>,
    /// Attempts of earlier iterations of an inner loop: each iteration's walker counts from 1.
    attempt_base: u32,
    /// The `seq` of the next usage, prompt, tool call or thought row: with the id it names the
    /// row, so a retried write cannot count it twice.
    next_seq: u32,
    /// The usage and failovers recorded so far, written with the end: the store need not sum
    /// the rows again.
    totals: Totals,
    /// Calls of the gateway's tools the model made in this iteration and the gateway has not
    /// run (yet): written as not run unless `tool_run` claims them first (an unknown tool, an
    /// answer that also calls the client's tool).
    unrun: Vec<ToolCallRow>,
    /// The status the client was given (a stream's once its first event went out).
    answered_with: Option<u16>,
    ended: bool,
}

impl Recording {
    pub fn new(recorder: Arc<Recorder>, id: String, prompt: Option<String>, watch: Watch) -> Self {
        Self {
            recorder,
            id,
            started: Instant::now(),
            prompt,
            watch,
            attempts: 0,
            attempt_base: 0,
            key_hint: None,
            next_seq: 0,
            totals: Totals::default(),
            unrun: Vec::new(),
            answered_with: None,
            ended: false,
        }
    }

    /// One upstream attempt has ended; recorded now, so that a request abandoned later still
    /// shows every key it tried.
    pub fn attempt(&mut self, attempt: &AttemptRecord) {
        let number = self.attempt_base + attempt.number;
        self.attempts = number;
        self.key_hint.clone_from(&attempt.key_hint);
        self.watch.tally.waited(attempt.duration);
        self.watch
            .tally
            .provider()
            .attempt(attempt.key_index, attempt.status);
        if !self.recorder.enabled() {
            return;
        }
        let (failover_reason, cooldown_ms) = match attempt.verdict {
            Some(Verdict::RateLimited { cooldown, .. }) => {
                (Some("rate_limited".to_string()), Some(millis(cooldown)))
            }
            Some(Verdict::Rejected { reason }) => (Some(reason.as_str().to_string()), None),
            Some(Verdict::NotKeySpecific) | None => (None, None),
        };
        if failover_reason.is_some() {
            self.totals.failovers += 1;
        }
        self.recorder.record(Record::Attempt(AttemptRow {
            interception_id: self.id.clone(),
            number,
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
        let span = &self.watch.span;
        if let Some(usage) = &observation.usage {
            let model = self.watch.model.as_deref().unwrap_or("");
            self.watch.tally.provider().tokens(model, usage);
            span.record("gen_ai.usage.input_tokens", usage.input);
            span.record("gen_ai.usage.output_tokens", usage.output);
            span.record("gen_ai.usage.cache_read.input_tokens", usage.cache_read);
            span.record(
                "gen_ai.usage.cache_creation.input_tokens",
                usage.cache_write,
            );
        }
        if let Some(model) = &observation.model {
            span.record("gen_ai.response.model", model.as_str());
        }
        if !self.recorder.enabled() {
            return;
        }
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
            self.totals.input += usage.input;
            self.totals.output += usage.output;
            self.totals.cache_read += usage.cache_read;
            self.totals.cache_write += usage.cache_write;
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
            let injected = call.name.starts_with(crate::mcp::tools::TOOL_PREFIX);
            let row = ToolCallRow {
                interception_id: self.id.clone(),
                seq: self.seq(),
                provider_response_id: response_id.clone(),
                tool_call_id: call.id,
                name: call.name,
                input: call.input,
                injected,
                run: None,
                created_at: now,
            };
            // The gateway's own (MCP) tools are written with their run (`tool_run`).
            if injected {
                self.unrun.push(row);
            } else {
                self.recorder.record(Record::ToolCall(row));
            }
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

    /// An inner loop's next iteration walks the pool afresh: its attempts number on from here.
    pub fn next_iteration(&mut self) {
        self.write_unrun();
        self.attempt_base = self.attempts;
    }

    /// Time spent waiting for the upstream beside the attempts' heads (a blocking body, a
    /// stream's first event): not the gateway's own.
    pub fn waited(&mut self, duration: Duration) {
        self.watch.tally.waited(duration);
    }

    /// The client has its answer's status (a stream: its head and first event): the breaker
    /// learns it, and the gateway's own time ends.
    pub fn answered(&mut self, status: u16) {
        self.answered_with = Some(status);
        if let Some(permit) = &mut self.watch.permit {
            permit.answered(status);
        }
        self.watch.tally.answered();
    }

    /// A tool the gateway ran in its inner loop (`name` as the model called it, `input` its
    /// arguments), with where it lives and what it gave.
    pub fn tool_run(&mut self, call_id: Option<String>, name: &str, input: &str, run: ToolRun) {
        if !self.recorder.enabled() {
            return;
        }
        let observed = self
            .unrun
            .iter()
            .position(|row| row.tool_call_id == call_id && row.name == name)
            .map(|at| self.unrun.remove(at));
        let row = match observed {
            Some(row) => ToolCallRow {
                run: Some(run),
                ..row
            },
            None => ToolCallRow {
                interception_id: self.id.clone(),
                seq: self.seq(),
                provider_response_id: None,
                tool_call_id: call_id,
                name: name.to_string(),
                input: input.to_string(),
                injected: true,
                run: Some(run),
                created_at: now_millis(),
            },
        };
        self.recorder.record(Record::ToolCall(row));
    }

    /// Writes the gateway's tool calls of this iteration that were not run.
    fn write_unrun(&mut self) {
        for row in std::mem::take(&mut self.unrun) {
            self.recorder.record(Record::ToolCall(row));
        }
    }

    /// Ends the record, the metrics and the log line; later calls do nothing.
    pub fn end(&mut self, outcome: Outcome, status: Option<u16>, error: Option<String>) {
        if self.ended {
            return;
        }
        self.ended = true;
        if let Some(status) = status {
            self.answered(status);
        }
        if self.watch.pool_paid && self.attempts > 0 {
            self.watch.tally.provider().failover_attempts(self.attempts);
        }
        let span = &self.watch.span;
        if let Some(status) = status {
            // As i64: tracing-opentelemetry exports unsigned integers as text.
            span.record("http.response.status_code", i64::from(status));
        }
        span.record("aibridge.outcome", outcome.as_str());
        span.record("aibridge.attempts", i64::from(self.attempts));
        if let Some(key) = &self.key_hint {
            span.record("aibridge.key", key.as_str());
        }
        if outcome != Outcome::Completed {
            span.record("otel.status_code", "error");
        }
        self.watch.tally.finish(
            outcome,
            &Ending {
                request_id: &self.id,
                model: self.watch.model.as_deref(),
                status,
                attempts: self.attempts,
                key: self.key_hint.as_deref(),
                error: error.as_deref(),
            },
        );
        if !self.recorder.enabled() {
            return;
        }
        self.write_unrun();
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
            totals: Some(self.totals),
        }));
    }

    /// The gateway answered the request with `error` itself (pool exhausted, transport error, …).
    pub fn failed(&mut self, error: &GatewayError) {
        self.end(
            error.outcome(),
            Some(error.status().as_u16()),
            Some(error.to_string()),
        );
    }

    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Whether this request's record is written (recording on): bodies are then observed whole.
    pub fn is_recorded(&self) -> bool {
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
    /// A request whose handler or stream is dropped before it ended (the client went away) still
    /// gets an end, with the attempts made so far and the status it had been given, if any.
    fn drop(&mut self) {
        self.client_left(self.answered_with);
    }
}
