//! Bridged routes, the steps in order: intake, the body peeked at and adjusted by its API's
//! rules, the circuit breaker, the record's start, the upstream call with failover, and the
//! answer relayed — blocking bodies whole, streams event by event.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use aibridge_protocol::{Api, Observation, RequestSummary, summarize_request};
use aibridge_store::RequestKind;
use axum::response::Response;
use bytes::Bytes;
use http::Method;
use tokio::time::Instant;
use tracing::field::Empty;

use super::agentic::LoopCall;
use super::in_request_span;
use crate::error::GatewayError;
use crate::intake::{Caller, Incoming, Intake, Payer, RequestMeta};
use crate::mcp::tools::McpTools;
use crate::provider::Provider;
use crate::record::{NewRequest, Outcome, Recording, StreamRecording, Watch};
use crate::relay::blocking::{FinishedIfDropped, is_event_stream, relay_blocking, relay_error};
use crate::relay::stream::StreamBounds;
use crate::state::AppState;
use crate::telemetry::tally::RequestTally;
use crate::upstream::apidump::DumpSubject;
use crate::upstream::{CallDeadline, CallDump, UpstreamCall};

/// A request that passed intake, its body ready for the upstream.
struct Admitted {
    caller: Caller,
    meta: RequestMeta,
    summary: RequestSummary,
    /// Where it goes upstream.
    url: Box<reqwest::Url>,
    /// What goes upstream (the client's body, adjusted, with any tools injected).
    body: Bytes,
    /// The client's body as it came, when tools were injected into `body`: what the record's
    /// prompt and client are read from.
    sent: Option<Bytes>,
    /// Set when MCP tools were injected: the answer may be the gateway's to continue.
    tools: Option<Arc<McpTools>>,
}

pub async fn handle(
    state: &Arc<AppState>,
    provider: &Arc<Provider>,
    api: Api,
    incoming: Incoming,
    tally: RequestTally,
) -> Result<Response, GatewayError> {
    let request_id = incoming.meta.request_id.clone();
    let mut watch = Watch::new(tally);
    let admitted = match admit(state, provider, api, incoming, &mut watch).await {
        Ok(admitted) => admitted,
        Err(error) => {
            watch.refused(&request_id, &error);
            return Err(error);
        }
    };
    let Admitted {
        caller,
        meta,
        summary,
        url,
        body,
        sent,
        tools,
    } = admitted;
    let span = tracing::info_span!(
        "bridge",
        otel.name = %format_args!("chat {}", summary.model),
        otel.kind = "server",
        otel.status_code = Empty,
        request_id = %meta.request_id,
        provider = %provider.name,
        model = %summary.model,
        stream = summary.stream,
        user = %caller.user,
        payer = ?caller.payer,
        gen_ai.operation.name = "chat",
        gen_ai.provider.name = provider.kind.gen_ai_name(),
        gen_ai.request.model = %summary.model,
        gen_ai.response.model = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        gen_ai.usage.cache_read.input_tokens = Empty,
        gen_ai.usage.cache_creation.input_tokens = Empty,
        http.response.status_code = Empty,
        aibridge.outcome = Empty,
        aibridge.attempts = Empty,
        aibridge.key = Empty,
    );
    crate::telemetry::otlp::set_parent_from(&span, &meta.headers);
    watch.span = span.clone();
    let recording = crate::record::begin(&state.recorder, provider, &meta, &caller, watch, || {
        NewRequest {
            kind: RequestKind::Bridged,
            method: "POST",
            route: api.path(),
            model: Some(summary.model.clone()),
            streaming: summary.stream,
            client: crate::intake::client::identify(&meta.headers, sent.as_ref().unwrap_or(&body)),
            prompt: api.prompt(sent.as_ref().unwrap_or(&body)),
        }
    })
    .await?;
    let call = UpstreamCall {
        client: &state.client,
        provider,
        method: Method::POST,
        url,
        headers: provider.bridged_headers(crate::intake::headers::upstream_headers(
            &meta.headers,
            &caller,
            state.config.send_actor_headers,
        )),
        body,
        payer: caller.payer,
        deadline: if summary.stream {
            CallDeadline::Head(state.config.upstream.first_byte_timeout)
        } else {
            CallDeadline::Whole(state.config.upstream.request_timeout)
        },
        is_key_check: false,
        dump: state.apidump.as_ref().map(|dump| CallDump {
            dump,
            subject: DumpSubject::Model(&summary.model),
            request_id: &meta.request_id,
        }),
    };
    match tools {
        Some(tools) if summary.stream => {
            let looped = LoopCall {
                url: call.url,
                headers: call.headers,
                body: call.body,
                payer: call.payer,
                model: summary.model.clone(),
                request_id: meta.request_id.clone(),
            };
            // Boxed: the loop's state would otherwise grow every request's future (copied
            // when the request is spawned), with or without tools.
            let work = Box::pin(super::agentic::stream(
                state.clone(),
                provider.clone(),
                api,
                looped,
                recording,
                tools,
            ));
            in_request_span(span, work).await
        }
        Some(tools) => {
            let work = Box::pin(super::agentic::blocking(
                state, call, api, recording, &tools,
            ));
            in_request_span(span, work).await
        }
        None => in_request_span(span, relay(state, call, api, recording)).await,
    }
}

/// Intake, the body's peek and adjustment, and the breaker: everything that may refuse the
/// request before its record begins.
async fn admit(
    state: &AppState,
    provider: &Provider,
    api: Api,
    incoming: Incoming,
    watch: &mut Watch,
) -> Result<Admitted, GatewayError> {
    let Intake { caller, meta, body } = state.intake(provider, incoming).await?;
    watch.pool_paid = caller.payer == Payer::Pool;
    let summary = summarize_request(&body)?;
    watch.model = Some(summary.model.clone());
    let body = api.prepare_body(&summary, body)?;
    // MCP tools go into every bridged request, blocking or streaming.
    let (body, sent, tools) = match &state.mcp {
        Some(mcp) => {
            let tools = mcp.rendered(api);
            if tools.is_empty() {
                (body, None, None)
            } else {
                let injected = api.inject_rendered(&body, &tools)?;
                (injected, Some(body), Some(mcp.clone()))
            }
        }
        _ => (body, None, None),
    };
    let (url, body) = provider.bridged_target(
        api,
        &summary,
        body,
        &meta.headers,
        meta.query.as_deref(),
        caller.payer == Payer::Pool,
    )?;
    if let Some(breakers) = &state.breakers {
        let permit = breakers
            .admit(&provider.name, api.path(), &summary.model)
            .map_err(|refused| GatewayError::CircuitOpen {
                retry_after: refused.retry_after,
            })?;
        watch.permit = Some(permit);
    }
    Ok(Admitted {
        caller,
        meta,
        summary,
        url,
        body,
        sent,
        tools,
    })
}

/// Sends the call (failing over between pool keys), relays the upstream's answer, and records
/// what the answer said and how the request ended.
async fn relay(
    state: &AppState,
    call: UpstreamCall<'_>,
    api: Api,
    mut recording: Recording,
) -> Result<Response, GatewayError> {
    let served = call.send(&mut recording).await?;
    let response = served.response;
    let status = response.status().as_u16();
    let idle = state.config.upstream.stream_idle_timeout;
    if !response.status().is_success() {
        let reading = Instant::now();
        let relayed = relay_error(response, api.dialect(), call.payer, idle).await;
        recording.waited(reading.elapsed());
        recording.end(Outcome::UpstreamError, Some(status), None);
        return Ok(relayed);
    }
    if is_event_stream(response.headers()) {
        let bounds = StreamBounds {
            first_event_by: served.sent_at + state.config.upstream.first_byte_timeout,
            idle,
            cut: state.cut_streams.clone(),
        };
        let recording = StreamRecording::new(recording, api, status);
        return crate::relay::stream::relay(response, api, call.payer, recording, bounds).await;
    }
    // The body is read, observed and recorded right here (no task to spawn and wake: a small
    // answer is usually whole by now); if the client goes away meanwhile, this future is
    // dropped and the rest runs on as a task of its own, so the usage and the serving key's
    // answer are not lost with it.
    let payer = call.payer;
    let client_left = Arc::new(AtomicBool::new(false));
    let left = client_left.clone();
    let work = async move {
        let reading = Instant::now();
        let read = relay_blocking(response, payer).await;
        recording.waited(reading.elapsed());
        match read {
            Ok((relayed, body)) => {
                // Without recording only the usage is needed (for the metrics and the trace).
                let observation = if recording.is_recorded() {
                    api.observe_body(&body)
                } else if crate::telemetry::otlp::is_exporting() {
                    api.observe_usage(&body)
                } else {
                    Observation {
                        usage: api.usage_of_body(&body),
                        ..Observation::default()
                    }
                };
                recording.observation(observation);
                if left.load(Ordering::Acquire) {
                    recording.client_left(Some(status));
                } else {
                    recording.end(Outcome::Completed, Some(status), None);
                }
                Ok(relayed)
            }
            Err(error) => {
                recording.end(
                    Outcome::GatewayError,
                    Some(error.status().as_u16()),
                    Some(error.to_string()),
                );
                Err(error)
            }
        }
    };
    FinishedIfDropped::new(work, client_left).await
}
