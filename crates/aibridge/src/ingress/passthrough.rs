//! Passthrough routes: allow-listed provider endpoints (model lists, token counting, stored
//! responses) reverse-proxied with the pool's key, failing over like the bridged routes. The body
//! is read once and replayed byte for byte on each attempt; the answer streams back as it comes.

use std::net::SocketAddr;
use std::sync::Arc;

use aibridge_store::RequestKind;
use axum::response::Response;
use http::Method;

use super::in_request_span;
use crate::error::GatewayError;
use crate::intake::headers::{append_forwarded_for, upstream_headers};
use crate::intake::{Incoming, Intake, Payer};
use crate::provider::Provider;
use crate::record::{NewRequest, Outcome, Watch};
use crate::state::AppState;
use crate::telemetry::tally::RequestTally;
use crate::upstream::apidump::DumpSubject;
use crate::upstream::{CallDeadline, CallDump, UpstreamCall};

pub async fn handle(
    state: &Arc<AppState>,
    provider: &Arc<Provider>,
    method: Method,
    upstream_path: &str,
    client_addr: Option<SocketAddr>,
    incoming: Incoming,
    tally: RequestTally,
) -> Result<Response, GatewayError> {
    let request_id = incoming.meta.request_id.clone();
    let mut watch = Watch::new(tally);
    let Intake { caller, meta, body } = match state.intake(provider, incoming).await {
        Ok(intake) => intake,
        Err(error) => {
            watch.refused(&request_id, &error);
            return Err(error);
        }
    };
    watch.pool_paid = caller.payer == Payer::Pool;
    // The model list with nothing that scopes it is the very call that checks a key.
    let is_key_check = method == Method::GET
        && upstream_path == provider.kind.models_path()
        && !meta.headers.contains_key("anthropic-beta");
    let mut headers = upstream_headers(&meta.headers, &caller, state.config.send_actor_headers);
    append_forwarded_for(&mut headers, client_addr);
    let span = tracing::info_span!(
        "passthrough",
        otel.name = %format_args!("{method} {}", watch.tally.route()),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        request_id = %meta.request_id,
        provider = %provider.name,
        method = %method,
        path = %upstream_path,
        user = %caller.user,
        payer = ?caller.payer,
        http.response.status_code = tracing::field::Empty,
        aibridge.outcome = tracing::field::Empty,
        aibridge.attempts = tracing::field::Empty,
        aibridge.key = tracing::field::Empty,
    );
    crate::telemetry::otlp::set_parent_from(&span, &meta.headers);
    watch.span = span.clone();
    let call = UpstreamCall {
        client: &state.client,
        provider,
        method,
        url: provider.upstream_url(upstream_path, meta.query.as_deref())?,
        headers,
        body,
        payer: caller.payer,
        // Some of these answers stream (a stored response replayed with ?stream=true): the head
        // is bounded here, the body chunk by chunk by the relay.
        deadline: CallDeadline::Head(state.config.upstream.first_byte_timeout),
        is_key_check,
        dump: state.apidump.as_ref().map(|dump| CallDump {
            dump,
            subject: DumpSubject::Passthrough(upstream_path),
            request_id: &meta.request_id,
        }),
    };
    let mut recording =
        crate::record::begin(&state.recorder, provider, &meta, &caller, watch, || {
            NewRequest {
                kind: RequestKind::Passthrough,
                method: call.method.as_str(),
                route: upstream_path,
                model: None,
                streaming: false,
                client: crate::intake::client::identify(&meta.headers, &call.body),
                prompt: None,
            }
        })
        .await?;
    in_request_span(span, async {
        // The record ends when the answer's head is relayed; its body streams on unobserved.
        let served = call.send(&mut recording).await?;
        let status = served.response.status();
        let outcome = if status.is_success() {
            Outcome::Completed
        } else {
            Outcome::UpstreamError
        };
        recording.end(outcome, Some(status.as_u16()), None);
        Ok(crate::relay::passthrough::relay(
            served.response,
            state.config.upstream.stream_idle_timeout,
        ))
    })
    .await
}
