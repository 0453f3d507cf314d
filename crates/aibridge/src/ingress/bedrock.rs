//! A Bedrock provider's routes beside Messages, which Bedrock has no passthrough for:
//! `GET /NAME/v1/models` lists the configured models (answered by the gateway), and
//! `POST /NAME/v1/messages/count_tokens` becomes Bedrock's CountTokens for the mapped model,
//! with the pool's credentials and failover, its answer turned into Anthropic's.

use std::sync::Arc;

use aibridge_protocol::bedrock as wire;
use aibridge_protocol::summarize_request;
use aibridge_store::RequestKind;
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use serde_json::json;

use super::in_request_span;
use crate::bedrock::BedrockSettings;
use crate::error::GatewayError;
use crate::intake::headers::upstream_headers;
use crate::intake::{Incoming, Intake, Payer};
use crate::provider::Provider;
use crate::record::{NewRequest, Outcome, Watch};
use crate::state::AppState;
use crate::telemetry::tally::{Ending, RequestTally};
use crate::upstream::apidump::DumpSubject;
use crate::upstream::{CallDeadline, CallDump, UpstreamCall};

/// The routes this module answers (also the `route` label of their metrics).
pub const MODELS: &str = "/v1/models";
pub const COUNT_TOKENS: &str = "/v1/messages/count_tokens";

pub async fn handle(
    state: &Arc<AppState>,
    provider: &Arc<Provider>,
    bedrock: &BedrockSettings,
    method: Method,
    upstream_path: &str,
    incoming: Incoming,
    tally: RequestTally,
) -> Result<Response, GatewayError> {
    let request_id = incoming.meta.request_id.clone();
    let mut watch = Watch::new(tally);
    let refused = |watch: Watch, error: GatewayError| {
        watch.refused(&request_id, &error);
        Err(error)
    };
    let Intake { caller, meta, body } = match state.intake(provider, incoming).await {
        Ok(intake) => intake,
        Err(error) => return refused(watch, error),
    };
    match (upstream_path, &method) {
        (MODELS, &Method::GET) => {
            watch.tally.finish(
                Outcome::Completed,
                &Ending {
                    request_id: &request_id,
                    status: Some(200),
                    ..Ending::default()
                },
            );
            Ok(json_response(StatusCode::OK, models_list(bedrock)))
        }
        (COUNT_TOKENS, &Method::POST) => {
            let summary = match summarize_request(&body) {
                Ok(summary) => summary,
                Err(error) => return refused(watch, error.into()),
            };
            watch.model = Some(summary.model.clone());
            watch.pool_paid = caller.payer == Payer::Pool;
            let (model, invoke) = match provider.bedrock_invoke(
                bedrock,
                &summary.model,
                &body,
                &meta.headers,
                caller.payer == Payer::Pool,
            ) {
                Ok(invoke) => invoke,
                Err(error) => return refused(watch, error),
            };
            let span = tracing::info_span!(
                "bedrock_count_tokens",
                otel.name = "count_tokens",
                otel.kind = "server",
                otel.status_code = tracing::field::Empty,
                request_id = %meta.request_id,
                provider = %provider.name,
                model = %summary.model,
                http.response.status_code = tracing::field::Empty,
                aibridge.outcome = tracing::field::Empty,
                aibridge.attempts = tracing::field::Empty,
                aibridge.key = tracing::field::Empty,
            );
            watch.span = span.clone();
            let call = UpstreamCall {
                client: &state.client,
                provider,
                method: Method::POST,
                url: provider.upstream_url(&wire::count_tokens_path(model), None)?,
                headers: provider.bridged_headers(upstream_headers(
                    &meta.headers,
                    &caller,
                    state.config.send_actor_headers,
                )),
                body: Bytes::from(wire::count_tokens_body(&invoke)),
                payer: caller.payer,
                deadline: CallDeadline::Whole(state.config.upstream.request_timeout),
                is_key_check: false,
                dump: state.apidump.as_ref().map(|dump| CallDump {
                    dump,
                    subject: DumpSubject::Passthrough(COUNT_TOKENS),
                    request_id: &meta.request_id,
                }),
            };
            let mut recording =
                crate::record::begin(&state.recorder, provider, &meta, &caller, watch, || {
                    NewRequest {
                        kind: RequestKind::Passthrough,
                        method: "POST",
                        route: COUNT_TOKENS,
                        model: Some(summary.model.clone()),
                        streaming: false,
                        client: crate::intake::client::identify(&meta.headers, &body),
                        prompt: None,
                    }
                })
                .await?;
            in_request_span(span, async {
                let served = call.send(&mut recording).await?;
                let status = served.response.status();
                let answer = served
                    .response
                    .bytes()
                    .await
                    .map_err(|e| GatewayError::from_transport(&e));
                let answer = match answer {
                    Ok(answer) => answer,
                    Err(error) => {
                        recording.failed(&error);
                        return Err(error);
                    }
                };
                if !status.is_success() {
                    // Already an Anthropic error (`upstream::bedrock::adapt`).
                    recording.end(Outcome::UpstreamError, Some(status.as_u16()), None);
                    return Ok(raw_json_response(status, answer));
                }
                match wire::count_tokens_answer(&answer) {
                    Some(converted) => {
                        recording.end(Outcome::Completed, Some(200), None);
                        Ok(raw_json_response(StatusCode::OK, Bytes::from(converted)))
                    }
                    None => {
                        let error = GatewayError::UpstreamUnreachable(
                            "Bedrock's CountTokens answer has no inputTokens".to_string(),
                        );
                        recording.failed(&error);
                        Err(error)
                    }
                }
            })
            .await
        }
        _ => refused(
            watch,
            GatewayError::MethodNotAllowed {
                method: method.to_string(),
                path: upstream_path.to_string(),
            },
        ),
    }
}

/// The configured client models in the shape of Anthropic's model list.
fn models_list(bedrock: &BedrockSettings) -> serde_json::Value {
    let data: Vec<serde_json::Value> = bedrock
        .models
        .keys()
        .map(|name| {
            json!({
                "type": "model",
                "id": name,
                "display_name": name,
                "created_at": "1970-01-01T00:00:00Z",
            })
        })
        .collect();
    json!({
        "first_id": data.first().map(|m| m["id"].clone()),
        "last_id": data.last().map(|m| m["id"].clone()),
        "has_more": false,
        "data": data,
    })
}

fn json_response(status: StatusCode, value: serde_json::Value) -> Response {
    raw_json_response(status, Bytes::from(value.to_string()))
}

fn raw_json_response(status: StatusCode, body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
