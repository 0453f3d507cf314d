//! Where a request enters: `/<provider-name>/<api path>` is split here and handed to the
//! provider's bridged route (`bridged`) or, for allow-listed endpoints, to `passthrough`;
//! everything else is a 404 in the caller's dialect. The operator API is `admin`, the
//! operator dashboard under `/ui/` is `ui`.

mod admin;
mod agentic;
mod bedrock;
mod bridged;
mod entry;
mod passthrough;
mod ui;

use std::net::SocketAddr;
use std::sync::Arc;

use aibridge_keypool::StoreHealth;
use aibridge_protocol::Dialect;
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, Method, StatusCode};
use tracing::Instrument;
use tracing::instrument::Instrumented;

use crate::config::AuthMode;
use crate::error::GatewayError;
use crate::intake::client::client_index;
use crate::intake::{Incoming, REQUEST_ID_HEADER, RequestMeta};
use crate::state::AppState;
use crate::telemetry::tally::RequestTally;

/// Methods a passthrough request may use; others (TRACE echoes headers on some servers,
/// PUT/PATCH write) never reach the upstream with a pool key.
const PASSTHROUGH_METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::DELETE,
    Method::HEAD,
    Method::OPTIONS,
];

pub use entry::MakeEntry;

/// The gateway's own routes (health, metrics, the operator API and dashboard); the providers'
/// routes enter through [`MakeEntry`], which sends the rest here.
fn router(state: Arc<AppState>) -> Router {
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/keys", get(admin::list_keys))
        .route("/api/v1/usage", get(admin::usage))
        .route("/api/v1/interceptions", get(admin::interceptions))
        .route(
            "/api/v1/keys/{provider}/{index}/enable",
            axum::routing::post(admin::enable_key),
        )
        .merge(ui::router(state.clone()))
        .method_not_allowed_fallback(admin::method_not_allowed)
        .fallback(not_a_route);
    // Only without tokens: with them, a request proves who sends it, and the layer's cost
    // stays off every request.
    let router = if state.config.auth == AuthMode::None {
        router.layer(axum::middleware::from_fn_with_state(
            state.clone(),
            same_origin_without_tokens,
        ))
    } else {
        router
    };
    router.with_state(state)
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// Ready when the recording database answers. The key-state store is reported too, but a
/// degraded one (Redis unreachable: each replica serves on its own state) does not make the
/// gateway unready.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let key_state = match state.key_store.health().await {
        StoreHealth::Up => "ok".to_string(),
        StoreHealth::Degraded(_) => "degraded".to_string(),
    };
    let database = state
        .recorder
        .store()
        .ping()
        .await
        .err()
        .map(|e| e.to_string());
    let ready = database.is_none();
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "unavailable" },
        "database": database.unwrap_or_else(|| "ok".into()),
        "key_state": key_state,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// Paths the router does not know: the answer in the caller's dialect (a provider's path
/// never comes here, see [`MakeEntry`]).
async fn not_a_route(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let client_addr = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    dispatch(state, request, client_addr).await
}

/// A provider's request: its route picked by the path after the provider's name, then bridged,
/// signed for Bedrock or passed through.
async fn dispatch(
    state: Arc<AppState>,
    request: Request,
    client_addr: Option<SocketAddr>,
) -> Response {
    let received = std::time::Instant::now();
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let not_found = |dialect| {
        GatewayError::RouteNotFound {
            method: parts.method.to_string(),
            path: path.to_string(),
        }
        .into_response(dialect)
    };
    // The path after the provider's name, with its leading slash: a slice of the request's.
    let (name, client_path) = match path.trim_start_matches('/').split_once('/') {
        Some((name, rest)) => (name, &path[path.len() - rest.len() - 1..]),
        None => (path.trim_start_matches('/'), "/"),
    };
    let Some(provider) = state.providers.get(name) else {
        return not_found(guess_dialect(&parts.headers));
    };
    let dialect = provider.kind.dialect();
    let Some(upstream_path) = client_path.strip_prefix(provider.kind.client_path_prefix()) else {
        return not_found(dialect);
    };
    let method = parts.method.clone();
    let bridged = provider.kind.bridged_api(upstream_path);
    if bridged.is_some() && method != Method::POST {
        return GatewayError::MethodNotAllowed {
            method: method.to_string(),
            path: path.to_string(),
        }
        .into_response(dialect);
    }
    let route = match bridged {
        Some(api) => Some(api.path()),
        None => provider.kind.passthrough_route(upstream_path),
    };
    let Some(route_metrics) = route.and_then(|route| provider.metrics.route(route)) else {
        return not_found(dialect);
    };
    if bridged.is_none() && !PASSTHROUGH_METHODS.contains(&method) {
        return GatewayError::MethodNotAllowed {
            method: method.to_string(),
            path: path.to_string(),
        }
        .into_response(dialect);
    }
    let request_id = uuid::Uuid::now_v7().to_string();
    let tally = RequestTally::start(
        provider.metrics.clone(),
        route_metrics.clone(),
        client_index(&parts.headers),
        received,
    );
    let incoming = Incoming {
        meta: RequestMeta {
            request_id: request_id.clone(),
            received,
            headers: parts.headers,
            query: parts.uri.query().map(str::to_string),
        },
        body,
    };
    // This whole future is moved into the heap for every request (by `Entry`), so its size is
    // the largest of the three routes' futures: the bridged one is inline (the hot path, one
    // move), the others are boxed (they are larger).
    let result = match bridged {
        Some(api) => bridged::handle(&state, provider, api, incoming, tally).await,
        None if let Some(bedrock) = &provider.bedrock => {
            Box::pin(bedrock::handle(
                &state,
                provider,
                bedrock,
                method,
                upstream_path,
                incoming,
                tally,
            ))
            .await
        }
        None => {
            Box::pin(passthrough::handle(
                &state,
                provider,
                method,
                upstream_path,
                client_addr,
                incoming,
                tally,
            ))
            .await
        }
    };
    let mut response = result.unwrap_or_else(|error| error.into_response(dialect));
    if let Ok(value) = request_id.parse() {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// For paths outside any provider: answer in Anthropic's shape to Anthropic clients (they always
/// send `anthropic-version`), in OpenAI's otherwise.
fn guess_dialect(headers: &HeaderMap) -> Dialect {
    if headers.contains_key("anthropic-version") {
        Dialect::Anthropic
    } else {
        Dialect::OpenAi
    }
}

/// Runs a request's upstream work inside its span (its end is logged by the request's tally).
/// A plain function, not an `async fn`: an async wrapper would keep a second copy of `work`'s
/// state in every request's future.
fn in_request_span<F>(span: tracing::Span, work: F) -> Instrumented<F>
where
    F: Future<Output = Result<Response, GatewayError>>,
{
    work.instrument(span)
}

/// `GET /metrics`: the key gauges are read from the key-state store now (a cooldown ends
/// without an event), then every family is rendered.
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    for provider in state.providers.values() {
        let Some(pool) = &provider.pool else { continue };
        match pool.snapshot().await {
            Ok(snapshots) => provider.metrics.set_key_states(&snapshots),
            Err(e) => {
                tracing::warn!(provider = %provider.name, error = %e, "cannot read key state for /metrics");
            }
        }
    }
    let up = state.key_store.health().await == StoreHealth::Up;
    state.metrics.set_key_state_store_up(up);
    (
        [(
            http::header::CONTENT_TYPE,
            crate::telemetry::metrics::CONTENT_TYPE,
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Installed with `AIBRIDGE_AUTH=none` only: a request a browser sent from another origin (or
/// for a name that is not this loopback gateway's) is refused before any route sees it.
async fn same_origin_without_tokens(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    match refuse_foreign(&state, &request) {
        Some(refused) => refused,
        None => next.run(request).await,
    }
}

/// Without gateway tokens, a browser's request from another origin is refused (see
/// `intake::origin`); `None` lets the request in.
fn refuse_foreign(state: &AppState, request: &Request) -> Option<Response> {
    if state.config.auth != AuthMode::None {
        return None;
    }
    let foreign =
        crate::intake::origin::check(request.headers(), state.config.listen.ip().is_loopback())
            .err()?;
    let dialect = state
        .providers
        .get(entry::first_segment(request.uri().path()))
        .map_or_else(|| guess_dialect(request.headers()), |p| p.kind.dialect());
    tracing::warn!(reason = %foreign, "refused a foreign browser request");
    Some(GatewayError::from(foreign).into_response(dialect))
}
