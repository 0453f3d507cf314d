use std::collections::BTreeMap;

use serde::Serialize;

/// Milliseconds since the Unix epoch (UTC).
pub type UnixMillis = i64;

/// A gateway user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub created_at: UnixMillis,
}

/// A gateway token as stored: only a hash of the secret, never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    pub id: String,
    /// The owner's user name.
    pub user: String,
    pub label: Option<String>,
    pub admin: bool,
    pub created_at: UnixMillis,
    pub revoked_at: Option<UnixMillis>,
    pub last_used_at: Option<UnixMillis>,
}

/// A token to create. `secret_hash` is whatever hash the caller computed of the secret; the
/// secret itself never reaches the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    pub id: String,
    /// The owner's user name; must exist.
    pub user: String,
    pub label: Option<String>,
    pub admin: bool,
    pub secret_hash: String,
    pub created_at: UnixMillis,
}

/// How the gateway handled a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    Bridged,
    Passthrough,
}

impl RequestKind {
    /// The stored (and serialised) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bridged => "bridged",
            Self::Passthrough => "passthrough",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "bridged" => Some(Self::Bridged),
            "passthrough" => Some(Self::Passthrough),
            _ => None,
        }
    }
}

/// Whose provider key paid for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// The central key pool.
    Pool,
    /// The caller's own key.
    Byok,
}

impl CredentialKind {
    /// The stored (and serialised) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pool => "pool",
            Self::Byok => "byok",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "pool" => Some(Self::Pool),
            "byok" => Some(Self::Byok),
            _ => None,
        }
    }
}

/// Written synchronously before the upstream call.
#[derive(Debug, Clone, PartialEq)]
pub struct NewInterception {
    /// A UUID string chosen by the caller.
    pub id: String,
    /// The user name (not checked against the users table, see the crate docs).
    pub user: String,
    pub kind: RequestKind,
    pub provider_type: String,
    pub provider_name: String,
    /// e.g. `POST`.
    pub method: String,
    /// e.g. `/v1/messages`.
    pub route: String,
    pub model: Option<String>,
    pub streaming: bool,
    pub client: Option<String>,
    pub session_id: Option<String>,
    pub user_agent: Option<String>,
    pub credential: CredentialKind,
    pub started_at: UnixMillis,
}

/// What one write transaction commits: interception starts, then records about interceptions
/// (these or earlier ones). The recorder puts the starts of requests waiting to go upstream in
/// the same transaction as the records queued meanwhile: one commit instead of two.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBatch {
    pub starts: Vec<NewInterception>,
    pub records: Vec<Record>,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty() && self.records.is_empty()
    }
}

/// Everything else, written asynchronously in batches.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Ended(InterceptionEnded),
    Attempt(AttemptRow),
    TokenUsage(TokenUsageRow),
    Prompt(PromptRow),
    ToolCall(ToolCallRow),
    Thought(ThoughtRow),
}

impl Record {
    /// The interception the record belongs to.
    pub fn interception_id(&self) -> &str {
        match self {
            Self::Ended(r) => &r.id,
            Self::Attempt(r) => &r.interception_id,
            Self::TokenUsage(r) => &r.interception_id,
            Self::Prompt(r) => &r.interception_id,
            Self::ToolCall(r) => &r.interception_id,
            Self::Thought(r) => &r.interception_id,
        }
    }

    /// A short name of the record kind, as used in [`crate::RecordFailure::kind`].
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Ended(_) => "ended",
            Self::Attempt(_) => "attempt",
            Self::TokenUsage(_) => "token_usage",
            Self::Prompt(_) => "prompt",
            Self::ToolCall(_) => "tool_call",
            Self::Thought(_) => "thought",
        }
    }
}

/// The end of an interception. Writing it again overwrites the previous end.
#[derive(Debug, Clone, PartialEq)]
pub struct InterceptionEnded {
    pub id: String,
    pub ended_at: UnixMillis,
    pub duration_ms: i64,
    /// HTTP status the client got (200 for a relayed stream).
    pub status: Option<u16>,
    /// `completed` | `upstream_error` | `gateway_error` | `stream_failed` |
    /// `client_disconnected` | `exhausted`.
    pub outcome: String,
    /// The pool key that actually served it (masked); `None` for BYOK.
    pub key_hint: Option<String>,
    pub attempts: u32,
    pub error: Option<String>,
    /// The request's token totals and failovers as its writer counted them while it recorded
    /// the request's usage and attempts; `None`: summed from those rows when the end is written.
    pub totals: Option<Totals>,
}

/// What an interception's row sums up of its records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub input: i64,
    pub output: i64,
    pub cache_read: i64,
    pub cache_write: i64,
    /// Attempts that failed over to another key.
    pub failovers: i64,
}

/// One upstream attempt. `(interception_id, number)` is unique.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRow {
    pub interception_id: String,
    pub number: u32,
    pub key_hint: Option<String>,
    pub status: Option<u16>,
    pub transport_error: Option<String>,
    /// `rate_limited` | `unauthorized` | `forbidden`; `None` when the attempt did not fail over.
    pub failover_reason: Option<String>,
    pub cooldown_ms: Option<i64>,
    /// After a 401/403, what the check of the key said: `rejected` (the key's fault: disabled),
    /// `accepted` (the request's fault: relayed, no failover), `inconclusive` (counted as the
    /// key's), `implied` (the request was itself the check).
    pub key_check: Option<String>,
    pub duration_ms: i64,
    pub created_at: UnixMillis,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TokenUsageRow {
    pub interception_id: String,
    /// Position among the interception's records of this kind, chosen by the gateway: with
    /// `interception_id` it names the row, so a retried batch inserts nothing twice.
    pub seq: u32,
    pub provider_response_id: Option<String>,
    pub input: i64,
    pub output: i64,
    pub cache_read: i64,
    pub cache_write: i64,
    /// Other token types by name; stored as JSON text.
    pub extra: BTreeMap<String, i64>,
    pub created_at: UnixMillis,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PromptRow {
    pub interception_id: String,
    /// Position among the interception's records of this kind, chosen by the gateway: with
    /// `interception_id` it names the row, so a retried batch inserts nothing twice.
    pub seq: u32,
    pub provider_response_id: Option<String>,
    pub prompt: String,
    pub created_at: UnixMillis,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolCallRow {
    pub interception_id: String,
    /// Position among the interception's records of this kind, chosen by the gateway: with
    /// `interception_id` it names the row, so a retried batch inserts nothing twice.
    pub seq: u32,
    pub provider_response_id: Option<String>,
    pub tool_call_id: Option<String>,
    pub name: String,
    /// JSON text, stored as given.
    pub input: String,
    pub injected: bool,
    /// Set for a tool the gateway ran: what it came to.
    pub run: Option<ToolRun>,
    pub created_at: UnixMillis,
}

/// A tool the gateway ran itself (MCP): where it lives and what it gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToolRun {
    pub server_name: String,
    pub server_url: String,
    /// The tool's own name on its server.
    pub tool_name: String,
    /// The result's text, or the error's.
    pub result: Option<String>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ThoughtRow {
    pub interception_id: String,
    /// Position among the interception's records of this kind, chosen by the gateway: with
    /// `interception_id` it names the row, so a retried batch inserts nothing twice.
    pub seq: u32,
    pub content: String,
    /// `thinking` | `reasoning_summary` | `commentary`.
    pub source: String,
    pub created_at: UnixMillis,
}

/// The grouping of a usage report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    User,
    Model,
    Key,
    Day,
    Provider,
}

/// Which interceptions a usage report covers, by start time: `since` inclusive, `until`
/// exclusive.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageFilter {
    pub since: Option<UnixMillis>,
    pub until: Option<UnixMillis>,
    pub user: Option<String>,
}

/// One line of a usage report. `group` is the user name, model ("-" when none), key hint
/// ("byok" for BYOK, "-" when no key served), day ("YYYY-MM-DD", UTC, of the start) or provider
/// name. Rows are ordered by `group` (byte order); totals are the caller's sum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    pub group: String,
    /// Interceptions started in the window, ended or not.
    pub requests: i64,
    /// Ended interceptions whose outcome is not `completed`.
    pub failed_requests: i64,
    /// Attempts with a failover reason.
    pub failovers: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
}

/// One group's usage on one UTC day ([`crate::Store::usage_by_day`]): `usage.group` is the
/// group as in [`UsageRow`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DailyUsageRow {
    /// `YYYY-MM-DD` (UTC) of the interceptions' start.
    pub day: String,
    pub usage: UsageRow,
}

/// One group's usage on one UTC day with one model ([`crate::Store::usage_cells`]): a report
/// and its chart by model from one pass over the records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageCell {
    /// `YYYY-MM-DD` (UTC) of the interceptions' start.
    pub day: String,
    /// The model (`-` when none).
    pub model: String,
    pub usage: UsageRow,
}

/// Which interceptions to list, newest first (by start time, then id).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InterceptionFilter {
    pub user: Option<String>,
    /// Start time, inclusive.
    pub since: Option<UnixMillis>,
    /// Start time, exclusive.
    pub until: Option<UnixMillis>,
    pub status: Option<u16>,
    pub outcome: Option<String>,
    /// Page size: 0 means 50; at most 500.
    pub limit: u32,
    /// Cursor: the `next` of the previous page (an interception id). Only interceptions after
    /// it in the listing order are returned; an unknown id gives an empty page.
    pub before: Option<String>,
}

/// An interception with everything recorded about it. The `NewInterception` fields, then the
/// `InterceptionEnded` fields (`None` until it ended; its `attempts` count is `attempt_count`
/// here), then the child records in the order they happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InterceptionDetail {
    pub id: String,
    pub user: String,
    pub kind: RequestKind,
    pub provider_type: String,
    pub provider_name: String,
    pub method: String,
    pub route: String,
    pub model: Option<String>,
    pub streaming: bool,
    pub client: Option<String>,
    pub session_id: Option<String>,
    pub user_agent: Option<String>,
    pub credential: CredentialKind,
    pub started_at: UnixMillis,
    pub ended_at: Option<UnixMillis>,
    pub duration_ms: Option<i64>,
    pub status: Option<u16>,
    pub outcome: Option<String>,
    pub key_hint: Option<String>,
    pub attempt_count: Option<u32>,
    pub error: Option<String>,
    /// By attempt number.
    pub attempts: Vec<AttemptView>,
    /// In the order written.
    pub usage: Vec<UsageView>,
    /// In the order written.
    pub prompts: Vec<String>,
    /// In the order written.
    pub tool_calls: Vec<ToolCallView>,
    /// In the order written.
    pub thoughts: Vec<ThoughtView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptView {
    pub number: u32,
    pub key_hint: Option<String>,
    pub status: Option<u16>,
    pub transport_error: Option<String>,
    pub failover_reason: Option<String>,
    pub cooldown_ms: Option<i64>,
    pub key_check: Option<String>,
    pub duration_ms: i64,
    pub created_at: UnixMillis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageView {
    pub provider_response_id: Option<String>,
    pub input: i64,
    pub output: i64,
    pub cache_read: i64,
    pub cache_write: i64,
    pub extra: BTreeMap<String, i64>,
    pub created_at: UnixMillis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToolCallView {
    pub provider_response_id: Option<String>,
    pub tool_call_id: Option<String>,
    pub name: String,
    /// JSON text, as given.
    pub input: String,
    pub injected: bool,
    /// Set for a tool the gateway ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<ToolRun>,
    pub created_at: UnixMillis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ThoughtView {
    pub content: String,
    pub source: String,
    pub created_at: UnixMillis,
}

/// One page of interceptions, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InterceptionPage {
    pub items: Vec<InterceptionDetail>,
    /// Cursor for the next page (`InterceptionFilter::before`); `None` on the last page.
    pub next: Option<String>,
}
