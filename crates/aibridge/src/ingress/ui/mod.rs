//! The operator dashboard under `/ui/`: pages rendered on the server with `maud` from what the
//! operator API and `/metrics` compute (the same store queries, key-pool snapshots and metric
//! series), so that every table works without JavaScript. The CSS, the script (`dashboard.js`:
//! countdowns, the usage chart, confirmations) and the chart library (uPlot) are embedded in the
//! binary (`assets`): nothing is loaded from elsewhere, and the content security policy says so.
//!
//! One file per page (`keys`, `usage`, `requests`, `health`), `layout` for what they share,
//! `auth` for who may see them (sessions in `tokens` mode, the same-origin rule and a browser
//! cookie in `none` mode) and the CSRF token of every form.

mod assets;
mod auth;
mod health;
mod keys;
mod layout;
mod requests;
mod usage;

use std::sync::Arc;

use axum::Router;
use axum::extract::Extension;
use axum::response::Response;
use axum::routing::{get, post};
use http::{HeaderValue, StatusCode, header};

use crate::state::AppState;

use auth::Sessions;

/// What the dashboard's handlers share: the gateway's state and the dashboard's sessions.
#[derive(Debug)]
struct Ui {
    app: Arc<AppState>,
    sessions: Sessions,
}

/// The policy of every dashboard answer: only the gateway's own scripts, styles and images
/// (the chart's data rides in a `<script type="application/json">`, which is never run).
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'";

/// The `/ui` routes, merged into the gateway's router (so `AIBRIDGE_AUTH=none`'s same-origin
/// rule covers them like every other route).
pub(super) fn router(app: Arc<AppState>) -> Router<Arc<AppState>> {
    let ui = Arc::new(Ui {
        app,
        sessions: Sessions::new(),
    });
    // Behind the access check: a session (tokens mode), the CSRF token on every POST.
    let pages = Router::new()
        .route("/ui", get(keys::page))
        .route("/ui/", get(keys::page))
        .route("/ui/keys", get(keys::page))
        .route("/ui/keys/{provider}/{index}/enable", post(keys::enable))
        .route("/ui/usage", get(usage::page))
        .route("/ui/usage.csv", get(usage::csv))
        .route("/ui/requests", get(requests::list))
        .route("/ui/requests/{id}", get(requests::detail))
        .route("/ui/health", get(health::page))
        .route("/ui/logout", post(auth::logout))
        .route("/ui/{*rest}", get(not_found))
        .route_layer(axum::middleware::from_fn_with_state(
            ui.clone(),
            auth::require_access,
        ));
    let open = Router::new()
        .route("/ui/login", get(auth::login_form).post(auth::login))
        .route("/ui/assets/{name}", get(assets::serve));
    pages
        .merge(open)
        .layer(axum::middleware::map_response(security_headers))
        .with_state(ui)
}

/// Headers of every dashboard answer; assets keep the long cache they set.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let fixed = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn not_found(Extension(access): Extension<auth::Access>) -> Response {
    layout::error_page(
        StatusCode::NOT_FOUND,
        Some(&access),
        "Not found",
        "There is no dashboard page here.",
    )
}
