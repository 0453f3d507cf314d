//! The operator's JSON API under `/api/v1/`: usage reports, request records, key health.
//! Needs an admin gateway token (in `Authorization: Bearer` or `x-api-key`); open to anyone in
//! `AIBRIDGE_AUTH=none` mode. Errors use OpenAI's error shape.

use std::collections::HashMap;
use std::sync::Arc;

use aibridge_protocol::Dialect;
use aibridge_store::{GroupBy, InterceptionFilter, UsageFilter};
use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde_json::json;

use crate::error::GatewayError;
use crate::state::AppState;
use crate::telemetry::metrics::Transition;
use crate::time::now_millis;
use crate::usage_report::{Grouping, parse_point, usage_json};

/// Answers the request with `work` if the caller is an admin, with the error otherwise.
async fn as_admin<F>(state: &AppState, headers: &HeaderMap, work: F) -> Response
where
    F: Future<Output = Result<Response, GatewayError>>,
{
    let result = match state.auth.identify_admin(headers).await {
        Ok(_) => work.await,
        Err(denied) => Err(denied),
    };
    result.unwrap_or_else(|e| e.into_response(Dialect::OpenAi))
}

fn bad_query(message: String) -> GatewayError {
    GatewayError::BadQuery(message)
}

fn time_param(params: &HashMap<String, String>, name: &str) -> Result<Option<i64>, GatewayError> {
    params
        .get(name)
        .map(|text| parse_point(text, now_millis()).map_err(|e| bad_query(format!("{name}: {e}"))))
        .transpose()
}

/// `GET /api/v1/usage?since=7d&until=…&user=NAME&by=user|model|key|day|provider`
pub async fn usage(
    State(state): State<Arc<AppState>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    as_admin(&state, &headers, async {
        let Query(params) = query.map_err(|e| bad_query(e.body_text()))?;
        let by_name = params.get("by").map(String::as_str).unwrap_or("user");
        // The same group names as `aibridge usage --by`.
        let by: GroupBy = Grouping::parse(by_name)
            .map_err(|e| bad_query(format!("by: {e}")))?
            .into();
        let filter = UsageFilter {
            since: time_param(&params, "since")?,
            until: time_param(&params, "until")?,
            user: params.get("user").cloned(),
        };
        // Requests just served count at once: what is queued is committed first.
        state.recorder.flush().await;
        let rows = state
            .recorder
            .store()
            .usage(&filter, by)
            .await
            .map_err(GatewayError::Database)?;
        Ok(Json(usage_json(&rows)).into_response())
    })
    .await
}

/// `GET /api/v1/interceptions?user=&since=&until=&status=&outcome=&limit=&before=`: newest first,
/// each with its attempts, usage, prompts and tool calls; `next` is the cursor of the next page.
pub async fn interceptions(
    State(state): State<Arc<AppState>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    as_admin(&state, &headers, async {
        let Query(params) = query.map_err(|e| bad_query(e.body_text()))?;
        let number = |name: &str| -> Result<Option<u32>, GatewayError> {
            params
                .get(name)
                .map(|v| {
                    v.parse::<u32>()
                        .map_err(|_| bad_query(format!("{name}: `{v}` is not a number")))
                })
                .transpose()
        };
        let filter = InterceptionFilter {
            user: params.get("user").cloned(),
            since: time_param(&params, "since")?,
            until: time_param(&params, "until")?,
            status: number("status")?.map(|s| u16::try_from(s).unwrap_or(u16::MAX)),
            outcome: params.get("outcome").cloned(),
            limit: number("limit")?.unwrap_or(0),
            before: params.get("before").cloned(),
        };
        // A request just served is listed at once: what is queued is committed first.
        state.recorder.flush().await;
        let page = state
            .recorder
            .store()
            .interceptions(&filter)
            .await
            .map_err(GatewayError::Database)?;
        Ok(Json(page).into_response())
    })
    .await
}

/// `GET /api/v1/keys`: every pool's keys by hint, with state, cooldown and requests served.
pub async fn list_keys(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    as_admin(&state, &headers, async {
        let mut names: Vec<&String> = state.providers.keys().collect();
        names.sort();
        // The records of requests just served are committed first, so their keys' counts are
        // there at once.
        state.recorder.flush().await;
        let recording = state.recorder.enabled();
        let mut providers = Vec::new();
        for name in names {
            let provider = &state.providers[name];
            let served = state
                .recorder
                .store()
                .served_by_key(&provider.name)
                .await
                .map_err(GatewayError::Database)?;
            let keys = match &provider.pool {
                None => vec![],
                Some(pool) => pool
                    .snapshot()
                    .await?
                    .into_iter()
                    .map(|k| {
                        json!({
                            "index": k.index,
                            "hint": k.hint,
                            "state": k.state.as_str(),
                            "cooldown_remaining_secs": k.cooldown_remaining.map(|d| d.as_secs_f64()),
                            "disabled_reason": k.disabled_reason.map(|r| r.as_str()),
                            "last_status": k.last_status,
                            // Without records, this process's own count.
                            "requests_served": if recording {
                                served.get(&k.hint).copied().unwrap_or(0)
                            } else {
                                i64::try_from(k.served_here).unwrap_or(i64::MAX)
                            },
                        })
                    })
                    .collect(),
            };
            providers.push(json!({
                "name": provider.name,
                "type": provider.kind.as_str(),
                "base_url": provider.base_url,
                "keys": keys,
            }));
        }
        Ok(Json(json!({ "providers": providers })).into_response())
    })
    .await
}

/// `POST /api/v1/keys/{provider}/{index}/enable`: an operator puts a key back in rotation.
pub async fn enable_key(
    State(state): State<Arc<AppState>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    as_admin(&state, &headers, async {
        let Path((provider, index)) = path.map_err(|e| bad_query(format!("path: {e}")))?;
        let index: usize = index
            .parse()
            .map_err(|_| bad_query(format!("index: `{index}` is not a key position (0, 1, …)")))?;
        let not_found = |path: String| GatewayError::RouteNotFound { method: "POST".into(), path };
        let instance = state.providers.get(&provider);
        let pool = instance
            .and_then(|p| p.pool.clone())
            .ok_or_else(|| not_found(format!("/api/v1/keys/{provider}")))?;
        if index >= pool.len() {
            return Err(not_found(format!("/api/v1/keys/{provider}/{index}")));
        }
        let changed = pool.enable(index).await?;
        if changed {
            if let Some(instance) = instance {
                instance.metrics.transition(index, Transition::ReEnabled);
            }
            tracing::info!(provider = %provider, key = %pool.keys()[index].hint(), "key re-enabled by an operator");
        }
        Ok((StatusCode::OK, Json(json!({ "enabled": true, "changed": changed }))).into_response())
    })
    .await
}

/// Any route of the gateway's own asked with a method it does not take: JSON like every other
/// answer of the operator API.
pub async fn method_not_allowed(method: http::Method, uri: http::Uri) -> Response {
    GatewayError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
    .into_response(Dialect::OpenAi)
}
