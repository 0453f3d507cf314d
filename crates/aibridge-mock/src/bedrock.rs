//! Amazon Bedrock for Anthropic models: Bedrock Runtime's InvokeModel,
//! InvokeModelWithResponseStream and CountTokens, and the control plane's ListFoundationModels,
//! with real authentication (SigV4 verified by [`crate::sigv4`], or a Bedrock API key as bearer)
//! and Bedrock's error shapes.

use std::borrow::Cow;

use axum::body::Body;
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, StatusCode};
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::anthropic;
use crate::body::Op;
use crate::body::{Ctx, input_tokens, ordered_json, output_tokens};
use crate::eventstream;
use crate::exceptions::{exception_status, upper_camel};
use crate::reply::Reply;
use crate::sigv4::{self, Signed};
use crate::sse;

/// The `anthropic_version` Bedrock requires in an Anthropic model's body.
pub const BEDROCK_ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";

/// The foundation models `GET /foundation-models` lists: (model id, name).
pub const BEDROCK_MODELS: &[(&str, &str)] = &[
    (
        "anthropic.claude-sonnet-4-5-20250929-v1:0",
        "Claude Sonnet 4.5",
    ),
    (
        "anthropic.claude-haiku-4-5-20251001-v1:0",
        "Claude Haiku 4.5",
    ),
    ("anthropic.claude-opus-4-1-20250805-v1:0", "Claude Opus 4.1"),
];

/// The region assumed for callers that do not name one (Bedrock API keys).
const DEFAULT_REGION: &str = "us-east-1";

const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";
const JSON: &str = "application/json";

/// The Bedrock operation of a request, or `None` when the path is not Bedrock's. The model id is
/// the path segment percent-decoded (`...-v1%3A0` is `...-v1:0`).
pub(crate) fn resolve(method: &Method, path: &str) -> Option<Op> {
    if path == "/foundation-models" {
        return Some(if method == Method::GET {
            Op::ListFoundationModels
        } else {
            Op::Unknown
        });
    }
    let rest = path.strip_prefix("/model/")?;
    let op = match rest.split_once('/') {
        Some((id, action)) if !id.is_empty() && method == Method::POST => {
            let model = percent_decode_str(id).decode_utf8_lossy().into_owned();
            match action {
                "invoke" => Op::Invoke {
                    model,
                    stream: false,
                },
                "invoke-with-response-stream" => Op::Invoke {
                    model,
                    stream: true,
                },
                "count-tokens" => Op::CountTokens,
                _ => Op::Unknown,
            }
        }
        _ => Op::Unknown,
    };
    Some(op)
}

/// Who an admitted Bedrock request is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    /// The access key id (SigV4) or the API key (bearer): the request's script key.
    pub key: String,
    /// The credential scope's region (SigV4), else [`DEFAULT_REGION`].
    pub region: String,
}

/// A Bedrock request refused before its script is consulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    /// The key the request claims (verified or not), for the record.
    pub key: String,
    status: u16,
    exception: &'static str,
    body: String,
}

impl Rejection {
    fn new(key: String, exception: &'static str, message: &str) -> Self {
        Self {
            key,
            status: exception_status(exception),
            exception,
            body: message_body("message", message),
        }
    }

    pub(crate) fn response(&self) -> Response {
        error_response(self.status, self.exception, self.body.clone())
    }
}

/// `{"<key>": message}`.
fn message_body(key: &str, message: &str) -> String {
    let mut map = Map::new();
    map.insert(key.to_owned(), Value::String(message.to_owned()));
    Value::Object(map).to_string()
}

/// The key a request claims: a bearer API key, or the access key id of its SigV4 credential.
fn claimed_key(authorization: Option<&str>) -> String {
    match authorization {
        Some(v) => match bearer(v) {
            Some(key) => key.to_owned(),
            None => sigv4::claimed_key_id(v).unwrap_or_default().to_owned(),
        },
        None => String::new(),
    }
}

/// The key of `Authorization: Bearer <key>`.
fn bearer(authorization: &str) -> Option<&str> {
    let scheme = authorization.get(..7)?;
    scheme
        .eq_ignore_ascii_case("bearer ")
        .then(|| authorization.get(7..).unwrap_or_default().trim())
}

/// Authenticates a Bedrock request: a Bedrock API key as bearer (any key but those starting with
/// `bad`), or SigV4 recomputed at `now`. A body over the mock's limit is refused here too, since
/// it was not read and cannot be verified.
pub(crate) fn admit(
    req: &Signed<'_>,
    too_large: bool,
    now: OffsetDateTime,
) -> Result<Caller, Rejection> {
    let authorization = req
        .headers
        .get(http::header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()));
    let authorization = authorization.as_deref().map(str::trim);
    let key = claimed_key(authorization);
    if too_large {
        return Err(Rejection::new(
            key,
            "ValidationException",
            "Input is too long for requested model.",
        ));
    }
    let Some(authorization) = authorization else {
        return Err(Rejection::new(
            key,
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        ));
    };
    if let Some(api_key) = bearer(authorization) {
        if api_key.is_empty() || api_key.starts_with("bad") {
            // Bedrock answers a bad API key with a capitalised `Message`.
            return Err(Rejection {
                key,
                status: 403,
                exception: "AccessDeniedException",
                body: message_body(
                    "Message",
                    "Authentication failed: Please make sure your API Key is valid.",
                ),
            });
        }
        return Ok(Caller {
            key,
            region: DEFAULT_REGION.to_owned(),
        });
    }
    match sigv4::verify(authorization, req, now) {
        Ok(verified) => Ok(Caller {
            key: verified.access_key_id,
            region: verified.region,
        }),
        Err(rejected) => Err(Rejection::new(key, rejected.exception, &rejected.message)),
    }
}

/// The exception a scripted error status answers with when the reply names none.
fn exception_for_status(status: u16) -> &'static str {
    match status {
        401 => "UnrecognizedClientException",
        403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        408 => "ModelTimeoutException",
        409 => "ConflictException",
        424 => "ModelErrorException",
        429 => "ThrottlingException",
        503 => "ServiceUnavailableException",
        s if (400..500).contains(&s) => "ValidationException",
        _ => "InternalServerException",
    }
}

/// Bedrock's message for an exception.
fn default_message(exception: &str) -> Cow<'static, str> {
    Cow::Borrowed(match exception {
        "ThrottlingException" => "Too many requests, please wait before trying again.",
        "ModelNotReadyException" => {
            "Model is not ready to serve inference requests. Wait and try your request again."
        }
        "ServiceQuotaExceededException" => {
            "Your request exceeds the service quota for your account."
        }
        "AccessDeniedException" => {
            "You don't have access to the model with the specified model ID."
        }
        "UnrecognizedClientException" => "The security token included in the request is invalid.",
        "ExpiredTokenException" => "The security token included in the request is expired",
        "InvalidSignatureException" => sigv4::SIGNATURE_MISMATCH,
        "MissingAuthenticationTokenException" => "Missing Authentication Token",
        "ValidationException" => {
            "Malformed input request, please reformat your input and try again."
        }
        "ResourceNotFoundException" => "The requested resource could not be found.",
        "ModelTimeoutException" => {
            "Model has timed out in processing the request. Try your request again."
        }
        "ModelErrorException" => "The model returned an error. Try your request again.",
        "ModelStreamErrorException" => "The model stream was interrupted. Try your request again.",
        "InternalServerException" => {
            "The system encountered an unexpected error during processing. Try your request again."
        }
        "ServiceUnavailableException" => "Bedrock is unable to process your request.",
        other => return Cow::Owned(format!("aibridge-mock: {other}")),
    })
}

/// `name` with a lower-case first letter: the `:exception-type` of a stream's exception frame.
fn lower_camel(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|c| c.to_ascii_lowercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

/// `x-amzn-ErrorType`: `<Name>:http://internal.amazon.com/coral/<namespace>/`, the
/// authentication layer's own namespace for its exceptions, Bedrock's for the rest.
fn error_type(exception: &str) -> String {
    let namespace = match exception {
        "UnrecognizedClientException"
        | "ExpiredTokenException"
        | "InvalidSignatureException"
        | "IncompleteSignatureException"
        | "MissingAuthenticationTokenException" => "com.amazon.coral.service",
        _ => "com.amazon.bedrock",
    };
    format!("{exception}:http://internal.amazon.com/coral/{namespace}/")
}

/// A Bedrock error: `status`, `x-amzn-ErrorType` and the JSON `body`.
fn error_response(status: u16, exception: &str, body: String) -> Response {
    let mut response = json_response(status, body);
    if let Ok(v) = HeaderValue::from_str(&error_type(exception)) {
        response.headers_mut().insert("x-amzn-errortype", v);
    }
    response
}

fn json_response(status: u16, body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
    response
}

/// Bedrock's error JSON for `status` (the status's default exception's message unless given).
pub(crate) fn error_body(status: u16, message: Option<&str>) -> Value {
    let message = message.map_or_else(
        || default_message(exception_for_status(status)).into_owned(),
        str::to_owned,
    );
    json!({ "message": message })
}

fn validation(message: &str) -> Response {
    error_response(400, "ValidationException", message_body("message", message))
}

/// `x-amzn-RequestId` of request `seq`: UUID-shaped, deterministic.
pub(crate) fn request_id(seq: u64) -> String {
    format!("00000000-0000-4000-8000-{:012x}", seq & 0xffff_ffff_ffff)
}

/// The scripted error of a reply that is not a success: its `exception` (or the one for its
/// status), Bedrock's message for it unless `body` is scripted.
fn scripted_error(reply: &Reply) -> Response {
    let status = reply.effective_status();
    let exception = match &reply.exception {
        Some(name) => upper_camel(name),
        None => exception_for_status(status).to_owned(),
    };
    let body = reply
        .body
        .clone()
        .unwrap_or_else(|| message_body("message", &default_message(&exception)));
    error_response(status, &exception, body)
}

/// Answers an admitted Bedrock request. `first_byte_ms` (the delay before the headers) feeds
/// the latency numbers (`x-amzn-bedrock-invocation-latency`, the stream's invocation metrics).
pub(crate) fn respond(
    op: &Op,
    ctx: &Ctx<'_>,
    reply: &Reply,
    caller: &Caller,
    first_byte_ms: u64,
) -> Response {
    if !reply.is_success() {
        return scripted_error(reply);
    }
    match op {
        Op::Invoke {
            model,
            stream: false,
        } => invoke(ctx, reply, model, first_byte_ms),
        Op::Invoke {
            model,
            stream: true,
        } => invoke_stream(ctx, reply, model, first_byte_ms),
        Op::CountTokens => match count_tokens_messages(ctx.body) {
            Ok(n) => json_response(
                200,
                reply
                    .body
                    .clone()
                    .unwrap_or_else(|| json!({"inputTokens": input_tokens(n)}).to_string()),
            ),
            Err(message) => validation(&message),
        },
        Op::ListFoundationModels => json_response(
            200,
            reply
                .body
                .clone()
                .unwrap_or_else(|| list_models(&caller.region)),
        ),
        Op::Unknown => error_response(
            404,
            "UnknownOperationException",
            message_body("message", "Unknown operation"),
        ),
    }
}

/// "Malformed input request: <detail>, please reformat your input and try again."
fn malformed(detail: &str) -> String {
    format!("Malformed input request: {detail}, please reformat your input and try again.")
}

/// JSON Schema's name of a value's type, as Bedrock's validator reports it.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "Null",
        Value::Bool(_) => "Boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "Integer",
        Value::Number(_) => "BigDecimal",
        Value::String(_) => "String",
        Value::Array(_) => "JSONArray",
        Value::Object(_) => "JSONObject",
    }
}

/// Checks an InvokeModel body for an Anthropic model the way Bedrock does (no `model` or
/// `stream`: the path and the operation say those; `anthropic_version` required); returns its
/// number of messages. `max_tokens` is required unless counting tokens.
fn validate_invoke(body: &[u8], need_max_tokens: bool) -> Result<usize, String> {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return Err(
            "Malformed input request, please reformat your input and try again.".to_owned(),
        );
    };
    for key in ["model", "stream"] {
        if map.contains_key(key) {
            return Err(malformed(&format!(
                "#: extraneous key [{key}] is not permitted"
            )));
        }
    }
    let mut required = vec!["anthropic_version", "messages"];
    if need_max_tokens {
        required.insert(1, "max_tokens");
    }
    for key in required {
        if !map.contains_key(key) {
            return Err(malformed(&format!("#: required key [{key}] not found")));
        }
    }
    match map.get("anthropic_version") {
        Some(Value::String(v)) if v == BEDROCK_ANTHROPIC_VERSION => {}
        Some(Value::String(v)) => {
            return Err(malformed(&format!(
                "#/anthropic_version: {v} is not a valid enum value"
            )));
        }
        Some(other) => {
            return Err(malformed(&format!(
                "#/anthropic_version: expected type: String, found: {}",
                type_name(other)
            )));
        }
        None => {}
    }
    if let Some(v) = map.get("max_tokens")
        && !(v.is_u64() || v.is_i64())
    {
        return Err(malformed(&format!(
            "#/max_tokens: expected type: Integer, found: {}",
            type_name(v)
        )));
    }
    match map.get("messages") {
        Some(Value::Array(messages)) => Ok(messages.len()),
        Some(other) => Err(malformed(&format!(
            "#/messages: expected type: JSONArray, found: {}",
            type_name(other)
        ))),
        None => Err(malformed("#: required key [messages] not found")),
    }
}

fn invoke(ctx: &Ctx<'_>, reply: &Reply, model: &str, first_byte_ms: u64) -> Response {
    let n_messages = match validate_invoke(ctx.body, true) {
        Ok(n) => n,
        Err(message) => return validation(&message),
    };
    let body = match &reply.body {
        Some(raw) => raw.clone(),
        None => ordered_json(&anthropic::message(
            ctx,
            &format!("msg_bdrk_mock_{}", ctx.seq),
            model,
            n_messages,
        )),
    };
    let mut response = json_response(200, body);
    let headers = response.headers_mut();
    for (name, value) in [
        ("x-amzn-bedrock-input-token-count", input_tokens(n_messages)),
        (
            "x-amzn-bedrock-output-token-count",
            output_tokens(ctx.deltas),
        ),
        ("x-amzn-bedrock-invocation-latency", first_byte_ms),
    ] {
        headers.insert(name, HeaderValue::from(value));
    }
    response
}

/// Padding of a chunk's payload (`"p"`): Bedrock pads every chunk with letters and digits so that
/// sizes don't leak the content.
const PADDING: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// A `chunk` event carrying `data` (base64 in `bytes`), padded.
fn chunk_frame(data: &[u8], index: usize) -> Bytes {
    let pad = PADDING.get(..=index % PADDING.len()).unwrap_or_default();
    let payload = json!({"bytes": BASE64.encode(data), "p": pad}).to_string();
    eventstream::frame(
        &[
            (":event-type", "chunk"),
            (":content-type", JSON),
            (":message-type", "event"),
        ],
        payload.as_bytes(),
    )
}

/// An exception frame: `:exception-type` in lowerCamel case, `{"message": ...}`.
fn exception_frame(exception: &str) -> Bytes {
    let name = upper_camel(exception);
    eventstream::frame(
        &[
            (":exception-type", &lower_camel(&name)),
            (":content-type", JSON),
            (":message-type", "exception"),
        ],
        message_body("message", &default_message(&name)).as_bytes(),
    )
}

fn invoke_stream(ctx: &Ctx<'_>, reply: &Reply, model: &str, first_byte_ms: u64) -> Response {
    let n_messages = match validate_invoke(ctx.body, true) {
        Ok(n) => n,
        Err(message) => return validation(&message),
    };
    let body = match &reply.body {
        Some(raw) => Body::from(raw.clone()),
        None => {
            let mut events = anthropic::stream_events(
                ctx,
                &format!("msg_bdrk_mock_{}", ctx.seq),
                model,
                n_messages,
            );
            let gaps = u64::try_from(events.len().saturating_sub(1)).unwrap_or(u64::MAX);
            if let Some(last) = events.last_mut()
                && let Value::Object(stop) = &mut last.data
            {
                // Bedrock appends its own metrics to the last event.
                stop.insert(
                    "amazon-bedrock-invocationMetrics".to_owned(),
                    json!({
                        "inputTokenCount": input_tokens(n_messages),
                        "outputTokenCount": output_tokens(ctx.deltas),
                        "invocationLatency": first_byte_ms
                            .saturating_add(reply.event_delay_ms.saturating_mul(gaps)),
                        "firstByteLatency": first_byte_ms,
                    }),
                );
            }
            let frames = events
                .iter()
                .enumerate()
                .map(|(i, event)| chunk_frame(ordered_json(&event.data).as_bytes(), i))
                .collect();
            let exception = reply
                .exception
                .clone()
                .unwrap_or_else(|| "internalServerException".to_owned());
            sse::body(
                sse::plan(frames, |_| exception_frame(&exception), reply),
                std::time::Duration::from_millis(reply.event_delay_ms),
            )
        }
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(EVENT_STREAM));
    headers.insert(
        "x-amzn-bedrock-content-type",
        HeaderValue::from_static(JSON),
    );
    response
}

/// The number of messages of a CountTokens request: `{"input": {"invokeModel": {"body":
/// <base64 InvokeModel body>}}}` or `{"input": {"converse": {"messages": [..]}}}`.
fn count_tokens_messages(body: &[u8]) -> Result<usize, String> {
    let request: Value = serde_json::from_slice(body)
        .map_err(|_| "Malformed input request, please reformat your input and try again.")?;
    let Some(input) = request.get("input").and_then(Value::as_object) else {
        return Err(
            "1 validation error detected: Value null at 'input' failed to satisfy \
                    constraint: Member must not be null"
                .to_owned(),
        );
    };
    match (input.get("invokeModel"), input.get("converse")) {
        (Some(invoke), None) => {
            let Some(encoded) = invoke.get("body").and_then(Value::as_str) else {
                return Err("1 validation error detected: Value null at \
                            'input.invokeModel.body' failed to satisfy constraint: Member must \
                            not be null"
                    .to_owned());
            };
            let decoded = BASE64.decode(encoded).map_err(|_| {
                "1 validation error detected: Value at 'input.invokeModel.body' failed to \
                 satisfy constraint: Member must be valid base64"
                    .to_owned()
            })?;
            validate_invoke(&decoded, false)
        }
        (None, Some(converse)) => match converse.get("messages") {
            Some(Value::Array(messages)) => Ok(messages.len()),
            _ => Err(
                "1 validation error detected: Value null at 'input.converse.messages' \
                      failed to satisfy constraint: Member must not be null"
                    .to_owned(),
            ),
        },
        _ => Err(
            "1 validation error detected: Value at 'input' failed to satisfy constraint: \
                  Exactly one of invokeModel, converse must be set"
                .to_owned(),
        ),
    }
}

/// `{"modelSummaries": [...]}` with [`BEDROCK_MODELS`], ARNs in `region`.
fn list_models(region: &str) -> String {
    let summaries: Vec<Value> = BEDROCK_MODELS
        .iter()
        .map(|(id, name)| {
            json!({
                "modelArn": format!("arn:aws:bedrock:{region}::foundation-model/{id}"),
                "modelId": id,
                "modelName": name,
                "providerName": "Anthropic",
                "inputModalities": ["TEXT", "IMAGE"],
                "outputModalities": ["TEXT"],
                "responseStreamingSupported": true,
                "customizationsSupported": [],
                "inferenceTypesSupported": ["INFERENCE_PROFILE"],
                "modelLifecycle": {"status": "ACTIVE"},
            })
        })
        .collect();
    json!({"modelSummaries": summaries}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_bedrock_paths() {
        let post = Method::POST;
        assert_eq!(
            resolve(&post, "/model/anthropic.claude-v1%3A0/invoke"),
            Some(Op::Invoke {
                model: "anthropic.claude-v1:0".into(),
                stream: false
            })
        );
        assert_eq!(
            resolve(&post, "/model/m/invoke-with-response-stream"),
            Some(Op::Invoke {
                model: "m".into(),
                stream: true
            })
        );
        assert_eq!(
            resolve(&post, "/model/m/count-tokens"),
            Some(Op::CountTokens)
        );
        assert_eq!(resolve(&post, "/model/m/converse"), Some(Op::Unknown));
        assert_eq!(resolve(&Method::GET, "/model/m/invoke"), Some(Op::Unknown));
        assert_eq!(resolve(&post, "/model//invoke"), Some(Op::Unknown));
        assert_eq!(
            resolve(&Method::GET, "/foundation-models"),
            Some(Op::ListFoundationModels)
        );
        assert_eq!(resolve(&post, "/v1/messages"), None);
    }

    #[test]
    fn exception_names_and_statuses() {
        assert_eq!(exception_status("ThrottlingException"), 429);
        assert_eq!(exception_status("throttlingException"), 429);
        assert_eq!(exception_status("ServiceQuotaExceededException"), 400);
        assert_eq!(exception_status("ModelNotReadyException"), 429);
        assert_eq!(exception_status("ExpiredTokenException"), 403);
        assert_eq!(exception_status("SomethingNew"), 400);
        assert_eq!(exception_for_status(429), "ThrottlingException");
        assert_eq!(exception_for_status(418), "ValidationException");
        assert_eq!(exception_for_status(502), "InternalServerException");
        assert_eq!(
            lower_camel("InternalServerException"),
            "internalServerException"
        );
        assert_eq!(upper_camel("throttlingException"), "ThrottlingException");
        assert_eq!(
            error_type("ThrottlingException"),
            "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"
        );
        assert_eq!(request_id(26), "00000000-0000-4000-8000-00000000001a");
    }

    #[test]
    fn invoke_bodies_are_checked_like_bedrock() {
        let ok = json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5, "messages": [{}, {}]});
        assert_eq!(validate_invoke(ok.to_string().as_bytes(), true), Ok(2));
        let mut with_model = ok.clone();
        with_model["model"] = json!("x");
        assert_eq!(
            validate_invoke(with_model.to_string().as_bytes(), true),
            Err("Malformed input request: #: extraneous key [model] is not permitted, please reformat your input and try again.".to_owned())
        );
        let no_version = json!({"max_tokens": 5, "messages": []});
        assert!(
            validate_invoke(no_version.to_string().as_bytes(), true)
                .unwrap_err()
                .contains("required key [anthropic_version] not found")
        );
        let wrong = json!({"anthropic_version": "2023-06-01", "max_tokens": 5, "messages": []});
        assert!(
            validate_invoke(wrong.to_string().as_bytes(), true)
                .unwrap_err()
                .contains("2023-06-01 is not a valid enum value")
        );
        let no_max = json!({"anthropic_version": "bedrock-2023-05-31", "messages": []});
        assert!(validate_invoke(no_max.to_string().as_bytes(), true).is_err());
        assert_eq!(validate_invoke(no_max.to_string().as_bytes(), false), Ok(0));
        assert!(validate_invoke(b"[]", true).is_err());
    }
}
