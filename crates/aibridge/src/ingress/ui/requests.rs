//! `/ui/requests`: the request records of `GET /api/v1/interceptions` (the same store query
//! and cursor), newest first, filtered, 50 a page (`limit` to change it); `/ui/requests/{id}`: one record with every attempt,
//! the usage of each iteration, the tool calls, the prompt and the thoughts.

use std::collections::HashMap;
use std::sync::Arc;

use aibridge_store::{InterceptionDetail, InterceptionFilter};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::response::Response;
use http::StatusCode;
use maud::{Markup, html};

use super::Ui;
use super::auth::Access;
use super::layout::{self, Nav, duration_ms, or_dash, path_segment, time_cell, truncate};
use crate::outcome::Outcome;
use crate::time::now_millis;
use crate::usage_report::parse_point;

/// Rows per page unless `limit` says otherwise (at most 500, as the API).
const PAGE_SIZE: u32 = 50;
/// Characters of the prompt shown before the whole of it is unfolded.
const PROMPT_PREVIEW: usize = 500;
/// Characters of a tool's input or result shown in the table.
const TOOL_TEXT: usize = 300;

/// The filters as typed (empty: not filtered), and the cursor.
struct RequestQuery {
    user: String,
    status: String,
    outcome: String,
    since: String,
    until: String,
    cursor: String,
    limit: String,
}

impl RequestQuery {
    fn read(query: Result<Query<HashMap<String, String>>, QueryRejection>) -> Self {
        let params = query.map(|Query(params)| params).unwrap_or_default();
        let text = |name: &str| {
            params
                .get(name)
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        Self {
            user: text("user"),
            status: text("status"),
            outcome: text("outcome"),
            since: text("since"),
            until: text("until"),
            cursor: text("cursor"),
            limit: text("limit"),
        }
    }

    fn parse(&self) -> Result<InterceptionFilter, String> {
        let now = now_millis();
        let point = |name: &str, text: &str| {
            if text.is_empty() {
                Ok(None)
            } else {
                parse_point(text, now)
                    .map(Some)
                    .map_err(|e| format!("{name}: {e}"))
            }
        };
        let status = if self.status.is_empty() {
            None
        } else {
            Some(
                self.status
                    .parse::<u16>()
                    .map_err(|_| format!("status: `{}` is not an HTTP status", self.status))?,
            )
        };
        let limit = if self.limit.is_empty() {
            PAGE_SIZE
        } else {
            self.limit
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=500).contains(n))
                .ok_or_else(|| format!("limit: `{}` is not a page size (1 to 500)", self.limit))?
        };
        let some = |text: &str| (!text.is_empty()).then(|| text.to_string());
        Ok(InterceptionFilter {
            user: some(&self.user),
            since: point("since", &self.since)?,
            until: point("until", &self.until)?,
            status,
            outcome: some(&self.outcome),
            limit,
            before: some(&self.cursor),
        })
    }

    /// The filters and page size (not the cursor), for the query string of another page.
    fn filters(&self) -> Vec<(&str, &str)> {
        vec![
            ("user", self.user.as_str()),
            ("status", self.status.as_str()),
            ("outcome", self.outcome.as_str()),
            ("since", self.since.as_str()),
            ("until", self.until.as_str()),
            ("limit", self.limit.as_str()),
        ]
    }
}

/// `GET /ui/requests?user=&status=&outcome=&since=&until=&cursor=`
pub(super) async fn list(
    State(ui): State<Arc<Ui>>,
    Extension(access): Extension<Access>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let query = RequestQuery::read(query);
    let filter = match query.parse() {
        Ok(filter) => filter,
        Err(problem) => {
            let body = html! {
                (filters(&query))
                p.problem role="alert" { (problem) }
            };
            return layout::respond(
                StatusCode::BAD_REQUEST,
                layout::page("Requests", Some(&access), Nav::Requests, false, body),
            );
        }
    };
    // Requests just served are in the list at once.
    ui.app.recorder.flush().await;
    let page = match ui.app.recorder.store().interceptions(&filter).await {
        Ok(page) => page,
        Err(e) => return layout::unavailable(&access, "the request records", &e),
    };
    let next_page = page.next.as_deref().map(|next| {
        let mut pairs = query.filters();
        pairs.push(("cursor", next));
        format!("/ui/requests?{}", layout::query(pairs))
    });
    let body = html! {
        (filters(&query))
        div.scroll { table #requests {
            thead { tr {
                th { "Started (UTC)" } th { "Request" } th { "User" } th { "Provider" } th { "Route" }
                th { "Model" } th.num { "Status" } th { "Outcome" } th { "Key" } th.num { "Attempts" }
                th.num { "Tokens in / out" } th.num { "Duration" }
            } }
            tbody {
                @for item in &page.items {
                    (request_row(item))
                }
                @if page.items.is_empty() {
                    tr { td colspan="12" { "No requests match." } }
                }
            }
        } }
        @if let Some(href) = &next_page {
            p.pager { a #next-page href=(href) { "Older requests →" } }
        }
        @if !query.cursor.is_empty() {
            p.pager { a #first-page href={ "/ui/requests?" (layout::query(query.filters())) } { "← Newest" } }
        }
    };
    layout::respond(
        StatusCode::OK,
        layout::page("Requests", Some(&access), Nav::Requests, false, body),
    )
}

fn filters(query: &RequestQuery) -> Markup {
    html! {
        form #request-filters method="get" action="/ui/requests" {
            label { "User " input type="text" name="user" value=(query.user) size="10"; }
            label { "Status " input type="text" name="status" value=(query.status) size="4" inputmode="numeric" placeholder="e.g. 429"; }
            label { "Outcome " input type="text" name="outcome" value=(query.outcome) size="14" list="outcomes"; }
            datalist #outcomes {
                // Refused requests have no record.
                @for outcome in Outcome::ALL.iter().filter(|o| **o != Outcome::Rejected) {
                    option value=(outcome.as_str()) {}
                }
            }
            label { "Since " input type="text" name="since" value=(query.since) size="10" placeholder="24h or 2026-01-01"; }
            label { "Until " input type="text" name="until" value=(query.until) size="10" placeholder="(now)"; }
            @if !query.limit.is_empty() {
                input type="hidden" name="limit" value=(query.limit);
            }
            button type="submit" { "Filter" }
        }
    }
}

fn request_row(item: &InterceptionDetail) -> Markup {
    let input: i64 = item.usage.iter().map(|u| u.input).sum();
    let output: i64 = item.usage.iter().map(|u| u.output).sum();
    let short: String = item
        .id
        .chars()
        .rev()
        .take(12)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    html! {
        tr.request data-id=(item.id) data-outcome=(or_dash(item.outcome.as_deref())) {
            td { (time_cell(item.started_at)) }
            td { a.request-link href={ "/ui/requests/" (path_segment(&item.id)) } title=(item.id) { "…" (short) } }
            td { (item.user) }
            td { (item.provider_name) }
            td { (item.method) " " (item.route) }
            td { (or_dash(item.model.as_deref())) }
            td.num { (or_dash(item.status)) }
            td { (or_dash(item.outcome.as_deref())) }
            td.hint { (key_of(item)) }
            td.num { (or_dash(item.attempt_count)) }
            td.num { (input) " / " (output) }
            td.num { (item.duration_ms.map_or_else(|| "—".to_string(), duration_ms)) }
        }
    }
}

/// The key that served a request: its hint, `byok`, or a dash.
fn key_of(item: &InterceptionDetail) -> String {
    match (&item.key_hint, item.credential) {
        (Some(hint), _) => hint.clone(),
        (None, aibridge_store::CredentialKind::Byok) => "byok".to_string(),
        (None, _) => "—".to_string(),
    }
}

/// `GET /ui/requests/{id}`
pub(super) async fn detail(
    State(ui): State<Arc<Ui>>,
    Extension(access): Extension<Access>,
    Path(id): Path<String>,
) -> Response {
    ui.app.recorder.flush().await;
    let item = match ui.app.recorder.store().interception(&id).await {
        Ok(Some(item)) => item,
        Ok(None) => {
            return layout::error_page(
                StatusCode::NOT_FOUND,
                Some(&access),
                "Request not found",
                "No request has that id.",
            );
        }
        Err(e) => return layout::unavailable(&access, "the request records", &e),
    };
    let title = format!("Request {}", item.id);
    layout::respond(
        StatusCode::OK,
        layout::page(&title, Some(&access), Nav::Requests, false, render(&item)),
    )
}

fn render(item: &InterceptionDetail) -> Markup {
    html! {
        dl.summary #request {
            dt { "User" } dd { (item.user) }
            dt { "Provider" } dd { (item.provider_name) " (" (item.provider_type) ")" }
            dt { "Route" } dd { (item.method) " " (item.route) " — " (item.kind.as_str()) }
            dt { "Model" } dd { (or_dash(item.model.as_deref())) }
            dt { "Streaming" } dd { (if item.streaming { "yes" } else { "no" }) }
            dt { "Client" } dd { (or_dash(item.client.as_deref())) }
            dt { "Session" } dd { (or_dash(item.session_id.as_deref())) }
            dt { "Credential" } dd { (item.credential.as_str()) }
            dt { "Started (UTC)" } dd { (time_cell(item.started_at)) }
            dt { "Ended (UTC)" } dd { @match item.ended_at { Some(at) => (time_cell(at)), None => "not ended" } }
            dt { "Duration" } dd { (item.duration_ms.map_or_else(|| "—".to_string(), duration_ms)) }
            dt { "Status" } dd.status { (or_dash(item.status)) }
            dt { "Outcome" } dd.outcome { (or_dash(item.outcome.as_deref())) }
            dt { "Served by" } dd.hint { (key_of(item)) }
            dt { "Attempts" } dd { (or_dash(item.attempt_count)) }
            @if let Some(error) = &item.error {
                dt { "Error" } dd.problem { (error) }
            }
            dt { "User agent" } dd { (or_dash(item.user_agent.as_deref())) }
        }
        h2 { "Attempts" }
        table #attempts {
            thead { tr {
                th.num { "#" } th { "Key" } th { "Status" } th { "Verdict" } th.num { "Cooldown" }
                th { "Key check" } th.num { "Duration" } th { "At (UTC)" }
            } }
            tbody {
                @for attempt in &item.attempts {
                    tr.attempt data-number=(attempt.number) {
                        td.number.num { (attempt.number) }
                        td.key { (attempt.key_hint.as_deref().unwrap_or("byok")) }
                        td.status {
                            @match (attempt.status, &attempt.transport_error) {
                                (Some(status), _) => { (status) }
                                (None, Some(error)) => { "transport error: " (error) }
                                (None, None) => { "—" }
                            }
                        }
                        td.verdict { (attempt.failover_reason.as_deref().unwrap_or("no failover")) }
                        td.cooldown.num { (attempt.cooldown_ms.map_or_else(|| "—".to_string(), duration_ms)) }
                        td.key-check { (or_dash(attempt.key_check.as_deref())) }
                        td.duration.num { (duration_ms(attempt.duration_ms)) }
                        td { (time_cell(attempt.created_at)) }
                    }
                }
                @if item.attempts.is_empty() {
                    tr { td colspan="8" { "No upstream attempt recorded." } }
                }
            }
        }
        h2 { "Usage per iteration" }
        table #iterations {
            thead { tr {
                th.num { "#" } th { "Response id" } th.num { "Input" } th.num { "Output" }
                th.num { "Cache read" } th.num { "Cache write" } th { "Other" }
            } }
            tbody {
                @for (n, usage) in item.usage.iter().enumerate() {
                    tr.iteration {
                        td.num { (n + 1) }
                        td { (or_dash(usage.provider_response_id.as_deref())) }
                        td.num { (usage.input) }
                        td.num { (usage.output) }
                        td.num { (usage.cache_read) }
                        td.num { (usage.cache_write) }
                        td { @for (kind, count) in &usage.extra { (kind) ": " (count) " " } }
                    }
                }
                @if item.usage.is_empty() {
                    tr { td colspan="7" { "No usage recorded." } }
                }
            }
        }
        h2 { "Tool calls" }
        table #tool-calls {
            thead { tr {
                th { "Tool" } th { "Injected" } th { "Server" } th { "Server's tool" }
                th { "Result or error" } th.num { "Duration" } th { "Input" }
            } }
            tbody {
                @for call in &item.tool_calls {
                    tr.tool-call {
                        td.name { code { (call.name) } }
                        td.injected { (if call.injected { "yes" } else { "no" }) }
                        @match &call.run {
                            Some(run) => {
                                td.server { (run.server_name) }
                                td.tool { (run.tool_name) }
                                td.result {
                                    @match (&run.error, &run.result) {
                                        (Some(error), _) => { span.problem { "error: " } (clipped(error, TOOL_TEXT)) }
                                        (None, Some(result)) => { (clipped(result, TOOL_TEXT)) }
                                        (None, None) => { "—" }
                                    }
                                }
                                td.num { (duration_ms(run.duration_ms)) }
                            }
                            None => {
                                td.server { "—" }
                                td.tool { "—" }
                                td.result { (if call.injected { "not run by the gateway" } else { "the client's" }) }
                                td.num { "—" }
                            }
                        }
                        td.input { code { (clipped(&call.input, TOOL_TEXT)) } }
                    }
                }
                @if item.tool_calls.is_empty() {
                    tr { td colspan="7" { "No tool calls." } }
                }
            }
        }
        h2 { "Prompt" }
        @match item.prompts.first() {
            Some(first) => {
                @let (preview, cut) = truncate(first, PROMPT_PREVIEW);
                p.prompt-preview { (preview) }
                details #prompt open[!cut && item.prompts.len() == 1] {
                    summary { "Whole prompt" @if item.prompts.len() > 1 { "s (" (item.prompts.len()) ")" } }
                    @for (n, prompt) in item.prompts.iter().enumerate() {
                        @if item.prompts.len() > 1 { h3 { "Prompt " (n + 1) } }
                        pre.prompt { (prompt) }
                    }
                }
            }
            None => {
                p { "No prompt recorded." }
                details #prompt { summary { "Whole prompt" } p { "None." } }
            }
        }
        @if !item.thoughts.is_empty() {
            h2 { "Thoughts" }
            details #thoughts {
                summary { (item.thoughts.len()) " recorded" }
                @for thought in &item.thoughts {
                    h3 { (thought.source) }
                    pre { (thought.content) }
                }
            }
        }
    }
}

/// A long text cut for a table cell, whole in its `title`.
fn clipped(text: &str, max: usize) -> Markup {
    let (shown, cut) = truncate(text, max);
    html! {
        @if cut { span title=(text) { (shown) } } @else { (shown) }
    }
}
