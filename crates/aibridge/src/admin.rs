//! The operator's JSON API under `/api/v1/`. Open to anyone in `AIBRIDGE_AUTH=none` mode; in
//! `tokens` mode it needs an admin token, and until tokens can be issued nobody has one.

use std::sync::Arc;

use aibridge_protocol::Dialect;
use axum::Json;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

use crate::config::AuthMode;
use crate::error::GatewayError;
use crate::server::AppState;

fn require_admin(state: &AppState, _request: &Request) -> Result<(), GatewayError> {
    match state.config.auth {
        AuthMode::None => Ok(()),
        AuthMode::Tokens => Err(GatewayError::InvalidToken),
    }
}

/// `GET /api/v1/keys`: every pool's keys by hint, with state and cooldown.
pub async fn list_keys(State(state): State<Arc<AppState>>, request: Request) -> Response {
    if let Err(denied) = require_admin(&state, &request) {
        return denied.into_response(Dialect::OpenAi);
    }
    let mut names: Vec<&String> = state.providers.keys().collect();
    names.sort();
    let mut providers = Vec::new();
    for name in names {
        let provider = &state.providers[name];
        let keys = match &provider.pool {
            None => vec![],
            Some(pool) => match pool.snapshot().await {
                Ok(keys) => keys
                    .into_iter()
                    .map(|k| {
                        json!({
                            "index": k.index,
                            "hint": k.hint,
                            "state": k.state.as_str(),
                            "cooldown_remaining_secs": k.cooldown_remaining.map(|d| d.as_secs_f64()),
                            "disabled_reason": k.disabled_reason.map(|r| r.as_str()),
                            "last_status": k.last_status,
                        })
                    })
                    .collect(),
                Err(e) => return GatewayError::KeyState(e).into_response(Dialect::OpenAi),
            },
        };
        providers.push(json!({
            "name": provider.name,
            "type": provider.kind.as_str(),
            "base_url": provider.base_url,
            "keys": keys,
        }));
    }
    Json(json!({ "providers": providers })).into_response()
}

/// `POST /api/v1/keys/{provider}/{index}/enable`: an operator puts a key back in rotation.
pub async fn enable_key(
    State(state): State<Arc<AppState>>,
    Path((provider, index)): Path<(String, usize)>,
    request: Request,
) -> Response {
    if let Err(denied) = require_admin(&state, &request) {
        return denied.into_response(Dialect::OpenAi);
    }
    let not_found = |what: String| {
        GatewayError::RouteNotFound {
            method: "POST".into(),
            path: what,
        }
        .into_response(Dialect::OpenAi)
    };
    let Some(pool) = state.providers.get(&provider).and_then(|p| p.pool.clone()) else {
        return not_found(format!("/api/v1/keys/{provider}"));
    };
    if index >= pool.len() {
        return not_found(format!("/api/v1/keys/{provider}/{index}"));
    }
    match pool.enable(index).await {
        Ok(changed) => {
            if changed {
                tracing::info!(provider = %provider, key = %pool.keys()[index].hint(), "key re-enabled by an operator");
            }
            (
                StatusCode::OK,
                Json(json!({ "enabled": true, "changed": changed })),
            )
                .into_response()
        }
        Err(e) => GatewayError::KeyState(e).into_response(Dialect::OpenAi),
    }
}
