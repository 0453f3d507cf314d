//! `/ui/health`: the providers and their keys by state, the circuit breakers, the MCP servers
//! and their tools, the key-state store and the database as `/readyz` sees them, and the
//! gateway's own overhead (p50, p99) from the histograms of `/metrics`.
//!
//! Each section reads on its own: one that fails says so and the rest of the page is still
//! shown.

use std::sync::Arc;

use aibridge_keypool::{KeyState, StoreHealth};
use axum::extract::{Extension, State};
use axum::response::Response;
use http::StatusCode;
use maud::{Markup, html};

use super::Ui;
use super::auth::Access;
use super::layout::{self, Nav};
use crate::config::KeyStateBackend;
use crate::mcp::client::redacted_url;
use crate::provider::Provider;
use crate::state::AppState;
use crate::telemetry::histogram::quantile;

/// `GET /ui/health`
pub(super) async fn page(
    State(ui): State<Arc<Ui>>,
    Extension(access): Extension<Access>,
) -> Response {
    let app = &ui.app;
    let mut providers: Vec<&Arc<Provider>> = app.providers.values().collect();
    providers.sort_by(|a, b| a.name.cmp(&b.name));
    let mut counts = Vec::new();
    for provider in &providers {
        counts.push(match &provider.pool {
            None => None,
            Some(pool) => Some(pool.snapshot().await.map(|keys| {
                let count = |state| keys.iter().filter(|k| k.state == state).count();
                (
                    keys.len(),
                    count(KeyState::Valid),
                    count(KeyState::Cooling),
                    count(KeyState::Disabled),
                )
            })),
        });
    }
    let key_state = app.key_store.health().await;
    let database = app.recorder.store().ping().await;
    let body = html! {
        section #providers {
            h2 { "Providers" }
            table {
                thead { tr {
                    th { "Name" } th { "Type" } th { "Base URL" } th.num { "Keys" }
                    th.num { "Valid" } th.num { "Cooling" } th.num { "Disabled" }
                } }
                tbody {
                    @for (provider, count) in providers.iter().zip(&counts) {
                        tr.provider data-provider=(provider.name) {
                            td { (provider.name) }
                            td { (provider.kind.as_str()) }
                            td { code { (redacted_url(&provider.base_url)) } }
                            @match count {
                                None => { td colspan="4" { "no keys: BYOK only" } }
                                Some(Ok((total, valid, cooling, disabled))) => {
                                    td.num { (total) }
                                    td.num.valid { (valid) }
                                    td.num.cooling { (cooling) }
                                    td.num.disabled { (disabled) }
                                }
                                Some(Err(e)) => { td.problem colspan="4" { "key state unreadable: " (e) } }
                            }
                        }
                    }
                }
            }
        }
        (breakers(app))
        (mcp(app))
        section #key-state {
            h2 { "Key-state store" }
            dl {
                dt { "Store" }
                dd { @match &app.config.key_state {
                    KeyStateBackend::Memory => { "memory (this process only)" }
                    KeyStateBackend::Redis { url, .. } => { "redis " code { (redacted_url(url)) } }
                } }
                dt { "State" }
                @match &key_state {
                    StoreHealth::Up => { dd.ok data-health="ok" { "ok" } }
                    StoreHealth::Degraded(why) => {
                        dd.problem data-health="degraded" { "degraded: serving on this replica's own key state (" (why) ")" }
                    }
                }
            }
        }
        section #database {
            h2 { "Database" }
            dl {
                dt { "Backend" } dd { (app.recorder.store().backend()) }
                dt { "Recording" } dd { (if app.recorder.enabled() { "on" } else { "off" }) }
                dt { "State" }
                @match &database {
                    Ok(()) => { dd.ok data-health="ok" { "ok" } }
                    Err(e) => { dd.problem data-health="error" { "error: " (e) } }
                }
            }
        }
        (overhead(&providers))
    };
    layout::respond(
        StatusCode::OK,
        layout::page("Health", Some(&access), Nav::Health, false, body),
    )
}

fn breakers(app: &AppState) -> Markup {
    html! {
        section #breakers {
            h2 { "Circuit breakers" }
            @match &app.breakers {
                None => { p { "Not configured (" code { "[circuit_breaker]" } ")." } }
                Some(breakers) => {
                    @let states = breakers.states();
                    @if states.is_empty() {
                        p { "No breaker yet: one is made for each (provider, route, model) as requests come." }
                    } @else {
                        table {
                            thead { tr {
                                th { "Provider" } th { "Route" } th { "Model" } th { "State" }
                                th.num { "Failures in a row" } th.num { "Half-opens in (s)" }
                            } }
                            tbody {
                                @for breaker in &states {
                                    tr.breaker data-state=(breaker.state) {
                                        td { (breaker.provider) }
                                        td { (breaker.route) }
                                        td { (breaker.model) }
                                        td { span class={ "state breaker-" (breaker.state) } { (breaker.state) } }
                                        td.num { (breaker.failures) }
                                        td.num { @match breaker.half_opens_in {
                                            Some(left) => (left.as_secs() + u64::from(left.subsec_nanos() > 0)),
                                            None => "—",
                                        } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn mcp(app: &AppState) -> Markup {
    html! {
        section #mcp {
            h2 { "MCP servers" }
            @match &app.mcp {
                None => { p { "None configured (" code { "[[mcp_servers]]" } ")." } }
                Some(tools) => {
                    @let listed = tools.tools();
                    table {
                        thead { tr { th { "Server" } th { "URL" } th { "Tools listed" } } }
                        tbody {
                            @for server in &app.config.mcp.servers {
                                @let own: Vec<_> = listed.iter().filter(|t| t.server == server.name).collect();
                                tr.mcp-server data-server=(server.name) data-tools=(own.len()) {
                                    td { (server.name) }
                                    td { code { (redacted_url(&server.url)) } }
                                    td {
                                        @if own.is_empty() {
                                            span.problem { "none: not listed yet (down, slow or empty)" }
                                        } @else {
                                            ul.tools {
                                                @for tool in &own {
                                                    li { code { (tool.tool) } " as " code { (tool.spec.name) } }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    p.hint { "At most " (tools.max_iterations) " upstream calls per client request." }
                }
            }
        }
    }
}

/// The gateway's own time per request, by provider and route and overall, from the
/// histograms of `aibridge_gateway_overhead_seconds` (since this process started).
fn overhead(providers: &[&Arc<Provider>]) -> Markup {
    let mut rows = Vec::new();
    let mut all: Vec<(f64, u64)> = Vec::new();
    for provider in providers {
        for route in provider.metrics.routes() {
            let (_, count, buckets) = route.overhead().snapshot();
            if all.is_empty() {
                all.clone_from(&buckets);
            } else {
                for (sum, (_, n)) in all.iter_mut().zip(&buckets) {
                    sum.1 += n;
                }
            }
            if count > 0 {
                rows.push((provider.name.clone(), route.route(), count, buckets));
            }
        }
    }
    let total: u64 = all.iter().map(|(_, n)| n).sum();
    let ms = |buckets: &[(f64, u64)], q| {
        quantile(buckets, q).map_or_else(|| "—".to_string(), |s| format!("{:.3}", s * 1000.0))
    };
    html! {
        section #overhead {
            h2 { "Gateway overhead" }
            p.hint { "The gateway's own time per request (until the answer is handed over, a stream's first event; the wait for the upstream left out), estimated from the histogram buckets of " code { "aibridge_gateway_overhead_seconds" } " since this process started." }
            table {
                thead { tr { th { "Provider" } th { "Route" } th.num { "Requests" } th.num { "p50 (ms)" } th.num { "p99 (ms)" } } }
                tbody {
                    @for (provider, route, count, buckets) in &rows {
                        tr.overhead {
                            td { (provider) } td { (route) } td.num { (count) }
                            td.num.p50 { (ms(buckets, 0.5)) } td.num.p99 { (ms(buckets, 0.99)) }
                        }
                    }
                }
                tfoot {
                    tr #overhead-all {
                        th colspan="2" { "All" } td.num { (total) }
                        td.num.p50 { (ms(&all, 0.5)) } td.num.p99 { (ms(&all, 0.99)) }
                    }
                }
            }
        }
    }
}
