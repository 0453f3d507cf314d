//! Anthropic Messages API bodies: messages (blocking and SSE, text or a `tool_use` call),
//! count_tokens, models, errors.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::body::{
    Ctx, Endpoint, Outcome, TEXT, ToolCall, input_tokens, output_tokens, parse_object, piece,
    split, sse_event,
};

/// The only model the mock lists.
pub(crate) const MODEL_ID: &str = "claude-mock-1";
const MODEL_DISPLAY_NAME: &str = "Claude Mock 1";
const MODEL_CREATED_AT: &str = "2025-01-01T00:00:00Z";

/// Anthropic error type for an HTTP status.
pub(crate) fn error_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

fn default_message(status: u16) -> String {
    match status {
        400 => "Invalid request".to_owned(),
        401 => "invalid x-api-key".to_owned(),
        403 => "Your API key does not have permission to use the specified resource.".to_owned(),
        404 => "Not found".to_owned(),
        413 => "Request exceeds the maximum allowed number of bytes.".to_owned(),
        429 => "Number of request tokens has exceeded your per-minute rate limit".to_owned(),
        500 => "Internal server error".to_owned(),
        529 => "Overloaded".to_owned(),
        other => format!("aibridge-mock error (status {other})"),
    }
}

/// `{"type":"error","error":{"type":<type for status>,"message":...}}`.
pub(crate) fn error_body(status: u16, message: Option<&str>) -> Value {
    let message = message.map_or_else(|| default_message(status), str::to_owned);
    json!({"type": "error", "error": {"type": error_type(status), "message": message}})
}

fn invalid(message: &str) -> Outcome {
    Outcome::Json {
        status: 400,
        body: error_body(400, Some(message)),
    }
}

/// The mid-stream error event: `event: error` with an `overloaded_error`.
fn stream_error_frame(_sent: usize) -> Bytes {
    sse_event(
        "error",
        &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    )
}

fn model_object(id: &str) -> Value {
    let display = if id == MODEL_ID {
        MODEL_DISPLAY_NAME.to_owned()
    } else {
        id.to_owned()
    };
    json!({"type": "model", "id": id, "display_name": display, "created_at": MODEL_CREATED_AT})
}

/// Checks `model` (string) and `messages` (array), and `max_tokens` (integer) when asked; returns
/// the model and the number of messages.
fn validate(
    map: &Map<String, Value>,
    need_max_tokens: bool,
) -> Result<(String, usize), &'static str> {
    let model = match map.get("model") {
        None => return Err("model: Field required"),
        Some(Value::String(m)) => m.clone(),
        Some(_) => return Err("model: Input should be a valid string"),
    };
    let messages = match map.get("messages") {
        None => return Err("messages: Field required"),
        Some(Value::Array(a)) => a.len(),
        Some(_) => return Err("messages: Input should be a valid list"),
    };
    if need_max_tokens {
        match map.get("max_tokens") {
            None => return Err("max_tokens: Field required"),
            Some(v) if v.is_u64() || v.is_i64() => {}
            Some(_) => return Err("max_tokens: Input should be a valid integer"),
        }
    }
    Ok((model, messages))
}

pub(crate) fn respond(endpoint: &Endpoint, ctx: &Ctx<'_>) -> Outcome {
    match endpoint {
        Endpoint::Messages => messages(ctx),
        Endpoint::CountTokens => count_tokens(ctx),
        Endpoint::ListModels => Outcome::Json {
            status: 200,
            body: json!({
                "data": [model_object(MODEL_ID)],
                "has_more": false,
                "first_id": MODEL_ID,
                "last_id": MODEL_ID,
            }),
        },
        Endpoint::GetModel(id) => Outcome::Json {
            status: 200,
            body: model_object(id),
        },
        Endpoint::ChatCompletions
        | Endpoint::Responses
        | Endpoint::NotFound
        | Endpoint::Bedrock(_) => Outcome::Json {
            status: 404,
            body: error_body(404, None),
        },
    }
}

fn count_tokens(ctx: &Ctx<'_>) -> Outcome {
    let map = match parse_object(ctx.body) {
        Ok(map) => map,
        Err(e) => return invalid(&e),
    };
    match validate(&map, false) {
        Ok((_, n)) => Outcome::Json {
            status: 200,
            body: json!({"input_tokens": input_tokens(n)}),
        },
        Err(e) => invalid(e),
    }
}

fn messages(ctx: &Ctx<'_>) -> Outcome {
    let map = match parse_object(ctx.body) {
        Ok(map) => map,
        Err(e) => return invalid(&e),
    };
    let (model, n_messages) = match validate(&map, true) {
        Ok(v) => v,
        Err(e) => return invalid(e),
    };
    let id = format!("msg_mock_{}", ctx.seq);
    if map.get("stream").and_then(Value::as_bool) != Some(true) {
        return Outcome::Json {
            status: 200,
            body: message(ctx, &id, &model, n_messages),
        };
    }
    let frames = stream_events(ctx, &id, &model, n_messages)
        .into_iter()
        .map(|event| match event.name {
            // Real Anthropic writes the ping with a space after the colon.
            "ping" => Bytes::from_static(b"event: ping\ndata: {\"type\": \"ping\"}\n\n"),
            name => sse_event(name, &event.data),
        })
        .collect();
    Outcome::Stream {
        frames,
        error_frame: stream_error_frame,
    }
}

/// `stop_reason` of a success: `tool_use` when it answers with a call.
fn stop_reason(call: Option<&ToolCall<'_>>) -> &'static str {
    if call.is_some() {
        "tool_use"
    } else {
        "end_turn"
    }
}

/// The Message object of a blocking success (text, or the scripted tool call), with the usual
/// usage numbers. Shared with Bedrock's InvokeModel.
pub(crate) fn message(ctx: &Ctx<'_>, id: &str, model: &str, n_messages: usize) -> Value {
    let call = ctx.tool_call.map(ToolCall::new);
    let content = match &call {
        None => vec![json!({"type": "text", "text": TEXT})],
        Some(call) => {
            let mut content: Vec<Value> = call
                .text
                .map(|text| json!({"type": "text", "text": text}))
                .into_iter()
                .collect();
            content.push(tool_use(call, call.arguments.clone()));
            content
        }
    };
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(call.as_ref()),
        "stop_sequence": null,
        "usage": {
            "input_tokens": input_tokens(n_messages),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output_tokens(ctx.deltas),
        },
    })
}

/// One event of a streamed Messages success: its SSE name and data.
pub(crate) struct StreamEvent {
    pub name: &'static str,
    pub data: Value,
}

/// The events of a streamed success, in order: `message_start`, the content blocks (text, or the
/// scripted tool call) with a `ping` after the first block start, `message_delta`,
/// `message_stop`. Shared with Bedrock's InvokeModelWithResponseStream.
pub(crate) fn stream_events(
    ctx: &Ctx<'_>,
    id: &str,
    model: &str,
    n_messages: usize,
) -> Vec<StreamEvent> {
    let call = ctx.tool_call.map(ToolCall::new);
    let mut events = Vec::with_capacity(2 * ctx.deltas + 9);
    events.push(StreamEvent {
        name: "message_start",
        data: json!({
            "type": "message_start",
            "message": {
                "id": id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {
                    "input_tokens": input_tokens(n_messages),
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "output_tokens": 1,
                },
            },
        }),
    });
    match &call {
        None => text_block(&mut events, 0, (0..ctx.deltas).map(piece)),
        Some(call) => {
            let mut index = 0;
            if let Some(text) = call.text {
                text_block(&mut events, index, split(text, ctx.deltas));
                index += 1;
            }
            tool_use_block(&mut events, index, call, call.argument_pieces(ctx.deltas));
        }
    }
    // Real Anthropic sends the ping right after the first content_block_start.
    events.insert(
        2,
        StreamEvent {
            name: "ping",
            data: json!({"type": "ping"}),
        },
    );
    events.push(StreamEvent {
        name: "message_delta",
        data: json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason(call.as_ref()), "stop_sequence": null},
            "usage": {"output_tokens": output_tokens(ctx.deltas)},
        }),
    });
    events.push(StreamEvent {
        name: "message_stop",
        data: json!({"type": "message_stop"}),
    });
    events
}

/// A `tool_use` content block with this `input` (the arguments, or `{}` when it opens a stream).
fn tool_use(call: &ToolCall<'_>, input: Value) -> Value {
    json!({
        "type": "tool_use",
        "id": format!("toolu_mock_{}", call.id),
        "name": call.name,
        "input": input,
    })
}

/// The events of a streamed text block: start, one `text_delta` per piece, stop.
fn text_block<'p>(
    events: &mut Vec<StreamEvent>,
    index: usize,
    pieces: impl IntoIterator<Item = &'p str>,
) {
    events.push(StreamEvent {
        name: "content_block_start",
        data: json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
    });
    for text in pieces {
        events.push(StreamEvent {
            name: "content_block_delta",
            data: json!({
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "text_delta", "text": text},
            }),
        });
    }
    block_stop(events, index);
}

/// The events of a streamed `tool_use` block: start with an empty `input`, one
/// `input_json_delta` per piece of the arguments' JSON, stop.
fn tool_use_block(
    events: &mut Vec<StreamEvent>,
    index: usize,
    call: &ToolCall<'_>,
    pieces: Vec<&str>,
) {
    events.push(StreamEvent {
        name: "content_block_start",
        data: json!({
            "type": "content_block_start",
            "index": index,
            "content_block": tool_use(call, json!({})),
        }),
    });
    for partial_json in pieces {
        events.push(StreamEvent {
            name: "content_block_delta",
            data: json!({
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "input_json_delta", "partial_json": partial_json},
            }),
        });
    }
    block_stop(events, index);
}

fn block_stop(events: &mut Vec<StreamEvent>, index: usize) {
    events.push(StreamEvent {
        name: "content_block_stop",
        data: json!({"type": "content_block_stop", "index": index}),
    });
}
