//! Where a request is recorded. The start of every request is written before the upstream call
//! (a request that cannot be recorded is refused); everything else — attempts, usage, prompts,
//! tool calls, thoughts, the end — travels with the request as a [`Recording`] and is queued for
//! the [`Recorder`]'s background writer, off the request path.

mod recording;
mod stream;
mod writer;

pub use recording::{AttemptRecord, KeyCheck, Outcome, Recording, Watch};
pub use stream::StreamRecording;
pub use writer::Recorder;

use std::sync::Arc;

use aibridge_store::{CredentialKind, NewInterception, RequestKind};

use crate::error::GatewayError;
use crate::intake::client::ClientInfo;
use crate::intake::{Caller, Payer, RequestMeta};
use crate::provider::Provider;
use crate::time::now_millis;

/// What the record of a new request says about it.
pub struct NewRequest<'a> {
    pub kind: RequestKind,
    pub method: &'a str,
    pub route: &'a str,
    pub model: Option<String>,
    pub streaming: bool,
    pub client: ClientInfo,
    pub prompt: Option<String>,
}

/// Writes the start of the request's record before anything goes upstream: a request that
/// cannot be recorded is refused (503) rather than served unrecorded. `describe` is only called
/// when recording is on, so a gateway that records nothing does none of that work.
pub async fn begin<'a>(
    recorder: &Arc<Recorder>,
    provider: &Provider,
    meta: &RequestMeta,
    caller: &Caller,
    watch: Watch,
    describe: impl FnOnce() -> NewRequest<'a>,
) -> Result<Recording, GatewayError> {
    if !recorder.enabled() {
        return Ok(Recording::new(
            recorder.clone(),
            meta.request_id.clone(),
            None,
            watch,
        ));
    }
    let request = describe();
    let record = NewInterception {
        id: meta.request_id.clone(),
        user: caller.user.clone(),
        kind: request.kind,
        provider_type: provider.kind.as_str().to_string(),
        provider_name: provider.name.clone(),
        method: request.method.to_string(),
        route: request.route.to_string(),
        model: request.model,
        streaming: request.streaming,
        client: Some(request.client.client.to_string()),
        session_id: request.client.session_id,
        user_agent: request.client.user_agent,
        credential: match caller.payer {
            Payer::Pool => CredentialKind::Pool,
            Payer::Byok => CredentialKind::Byok,
        },
        started_at: now_millis(),
    };
    let id = record.id.clone();
    if let Err(e) = recorder.begin(record).await {
        let error = GatewayError::RecordingUnavailable(e);
        watch.refused(&id, &error);
        return Err(error);
    }
    Ok(Recording::new(recorder.clone(), id, request.prompt, watch))
}

#[cfg(test)]
pub(crate) fn test_watch() -> Watch {
    use crate::telemetry::metrics::Metrics;
    use crate::telemetry::tally::RequestTally;
    let metrics = Metrics::new(&["Unknown"]);
    let provider = Arc::new(metrics.provider("test", &["/v1/messages"], &[], true));
    let route = provider.route("/v1/messages").cloned();
    Watch::new(RequestTally::start(
        provider,
        route.unwrap_or_else(|| unreachable!("the route was just made")),
        0,
        std::time::Instant::now(),
    ))
}
