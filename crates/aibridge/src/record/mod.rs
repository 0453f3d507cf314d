//! Where a request is recorded. The start of every request is written before the upstream call
//! (a request that cannot be recorded is refused); everything else — attempts, usage, prompts,
//! tool calls, thoughts, the end — travels with the request as a [`Recording`] and is queued for
//! the [`Recorder`]'s background writer, off the request path.

mod recording;
mod stream;
mod writer;

pub use recording::{AttemptRecord, KeyCheck, Outcome, Recording};
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
    describe: impl FnOnce() -> NewRequest<'a>,
) -> Result<Recording, GatewayError> {
    if !recorder.enabled() {
        return Ok(Recording::new(
            recorder.clone(),
            meta.request_id.clone(),
            None,
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
    recorder
        .begin(record)
        .await
        .map_err(GatewayError::RecordingUnavailable)?;
    Ok(Recording::new(recorder.clone(), id, request.prompt))
}
