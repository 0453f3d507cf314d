//! `/ui/keys`: every pool's keys by hint, as `GET /api/v1/keys` reads them (the key-state
//! store's snapshot, requests served from the records), with the key-pool counters of
//! `/metrics`, a live cooldown countdown and a re-enable button.

use std::sync::Arc;

use aibridge_keypool::{KeySnapshot, KeyState};
use axum::extract::{Extension, Path, State};
use axum::response::Response;
use http::StatusCode;
use maud::{Markup, html};

use super::Ui;
use super::auth::{Access, CSRF_FIELD};
use super::layout::{self, Nav, or_dash, path_segment};
use crate::provider::Provider;
use crate::telemetry::metrics::Transition;
use crate::time::now_millis;

/// One provider as the page shows it.
struct Pool {
    provider: Arc<Provider>,
    /// `None` for a provider without keys (BYOK only).
    keys: Option<Vec<Row>>,
    exhausted: (u64, u64),
}

struct Row {
    snapshot: KeySnapshot,
    served: i64,
    /// `[rate_limited, unauthorized, forbidden, re_enabled]` since this process started.
    transitions: [u64; 4],
}

/// `GET /ui/`, `/ui/keys`.
pub(super) async fn page(
    State(ui): State<Arc<Ui>>,
    Extension(access): Extension<Access>,
) -> Response {
    let app = &ui.app;
    // As `/api/v1/keys`: the records of requests just served are committed first.
    app.recorder.flush().await;
    let recording = app.recorder.enabled();
    let mut providers: Vec<&Arc<Provider>> = app.providers.values().collect();
    providers.sort_by(|a, b| a.name.cmp(&b.name));
    let mut pools = Vec::new();
    for provider in providers {
        let keys = match &provider.pool {
            None => None,
            Some(pool) => {
                let served = match app.recorder.store().served_by_key(&provider.name).await {
                    Ok(served) => served,
                    Err(e) => return layout::unavailable(&access, "the request records", &e),
                };
                let snapshots = match pool.snapshot().await {
                    Ok(snapshots) => snapshots,
                    Err(e) => return layout::unavailable(&access, "the key state", &e),
                };
                Some(
                    snapshots
                        .into_iter()
                        .map(|snapshot| Row {
                            // Without records, this process's own count.
                            served: if recording {
                                served.get(&snapshot.hint).copied().unwrap_or(0)
                            } else {
                                i64::try_from(snapshot.served_here).unwrap_or(i64::MAX)
                            },
                            transitions: provider
                                .metrics
                                .key_transitions(snapshot.index)
                                .unwrap_or_default(),
                            snapshot,
                        })
                        .collect(),
                )
            }
        };
        pools.push(Pool {
            provider: provider.clone(),
            keys,
            exhausted: provider.metrics.exhaustions(),
        });
    }
    let body = render(&pools, &access, now_millis());
    layout::respond(
        StatusCode::OK,
        layout::page("Keys", Some(&access), Nav::Keys, false, body),
    )
}

fn render(pools: &[Pool], access: &Access, now_ms: i64) -> Markup {
    html! {
        p.lede {
            "Keys are shown by their hint only. Cooldowns count down live; failover and exhaustion counts are this process's since it started (as on "
            code { "/metrics" } ")."
        }
        table #pools {
            thead { tr {
                th { "Provider" } th { "Type" } th { "Keys" }
                th.num title="Requests that found every key cooling (429 to the client)" { "Exhausted: cooling" }
                th.num title="Requests that found every key disabled (502 to the client)" { "Exhausted: disabled" }
            } }
            tbody {
                @for pool in pools {
                    tr.pool data-provider=(pool.provider.name) {
                        td { (pool.provider.name) }
                        td { (pool.provider.kind.as_str()) }
                        td { @match &pool.keys {
                            Some(keys) => { (keys.len()) }
                            None => { "none (BYOK only)" }
                        } }
                        td.exhausted-cooling.num { (pool.exhausted.0) }
                        td.exhausted-disabled.num { (pool.exhausted.1) }
                    }
                }
            }
        }
        div.scroll { table #keys {
            thead { tr {
                th { "Provider" } th.num { "#" } th { "Key" } th { "State" }
                th.num { "Cooldown (s)" } th { "Disabled for" } th.num { "Last status" }
                th.num { "Requests served" }
                th.num title="Times the key made a request fail over: 429 (cooled) / 401 / 403 (disabled)" { "Failovers 429 / 401 / 403" }
                th.num title="Times the probe or an operator put it back" { "Re-enabled" }
                th { "" }
            } }
            tbody {
                @for pool in pools {
                    @if let Some(keys) = &pool.keys {
                        @for row in keys {
                            (key_row(&pool.provider.name, row, access, now_ms))
                        }
                    }
                }
            }
        } }
    }
}

fn key_row(provider: &str, row: &Row, access: &Access, now_ms: i64) -> Markup {
    let key = &row.snapshot;
    let state = key.state.as_str();
    let [rate_limited, unauthorized, forbidden, re_enabled] = row.transitions;
    html! {
        tr.key data-provider=(provider) data-index=(key.index) data-hint=(key.hint) data-state=(state) {
            td { (provider) }
            td.num { (key.index) }
            td.hint { code { (key.hint) } }
            td.state { span class={ "state state-" (state) } { (state) } }
            td.cooldown.num {
                @if let (KeyState::Cooling, Some(left)) = (key.state, key.cooldown_remaining) {
                    @let left_ms = i64::try_from(left.as_millis()).unwrap_or(i64::MAX);
                    span.countdown data-until-ms=(now_ms.saturating_add(left_ms)) {
                        (left.as_secs() + u64::from(left.subsec_nanos() > 0))
                    }
                } @else {
                    "—"
                }
            }
            td.reason { (or_dash(key.disabled_reason.map(|r| r.as_str()))) }
            td.last-status.num { (or_dash(key.last_status)) }
            td.served.num { (row.served) }
            td.failovers.num { (rate_limited) " / " (unauthorized) " / " (forbidden) }
            td.re-enabled.num { (re_enabled) }
            td.action {
                @if key.state != KeyState::Valid {
                    // A cooling key comes back by itself anyway; a disabled one was refused by
                    // the provider, so the browser asks first (with JavaScript).
                    form.reenable method="post"
                        action={ "/ui/keys/" (path_segment(provider)) "/" (key.index) "/enable" }
                        data-confirm=[disabled_question(provider, key)] {
                        input type="hidden" name=(CSRF_FIELD) value=(access.csrf);
                        button.reenable type="submit" { "Re-enable" }
                    }
                }
            }
        }
    }
}

/// `POST /ui/keys/{provider}/{index}/enable` (the CSRF token checked by the access layer):
/// what `POST /api/v1/keys/{provider}/{index}/enable` does, then back to the keys (303).
pub(super) async fn enable(
    State(ui): State<Arc<Ui>>,
    Extension(access): Extension<Access>,
    Path((provider, index)): Path<(String, String)>,
) -> Response {
    let instance = ui.app.providers.get(&provider);
    let pool = instance.and_then(|p| p.pool.clone());
    let index = index.parse::<usize>().ok();
    let (Some(instance), Some(pool), Some(index)) = (instance, pool, index) else {
        return layout::error_page(
            StatusCode::NOT_FOUND,
            Some(&access),
            "Not found",
            "There is no such key.",
        );
    };
    if index >= pool.len() {
        return layout::error_page(
            StatusCode::NOT_FOUND,
            Some(&access),
            "Not found",
            "There is no such key.",
        );
    }
    match pool.enable(index).await {
        Ok(true) => {
            instance.metrics.transition(index, Transition::ReEnabled);
            tracing::info!(
                provider = %provider,
                key = %pool.keys()[index].hint(),
                user = access.user.as_deref().unwrap_or(crate::intake::auth::LOCAL_USER),
                "key re-enabled by an operator (dashboard)"
            );
        }
        Ok(false) => {}
        Err(e) => return layout::unavailable(&access, "the key state", &e),
    }
    layout::see_other("/ui/keys")
}

/// What the browser asks before re-enabling a disabled key; `None` for a cooling one.
fn disabled_question(provider: &str, key: &KeySnapshot) -> Option<String> {
    (key.state == KeyState::Disabled).then(|| {
        format!(
            "{} ({provider}) was disabled: the provider refused it ({}). Put it back in rotation anyway?",
            key.hint,
            key.disabled_reason.map_or("401/403", |r| r.as_str())
        )
    })
}
