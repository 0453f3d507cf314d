//! OpenAI bodies: chat completions (blocking and `data:` chunks ending in `[DONE]`), responses
//! (blocking and `response.created` … `response.completed` events), each answering with text or
//! a function call; models, errors.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::body::{
    CREATED, Ctx, Endpoint, Outcome, TEXT, ToolCall, input_tokens, ordered_json, output_tokens,
    parse_object, piece, split, sse_data, sse_event,
};

/// The only model the mock lists on the OpenAI dialect.
pub(crate) const MODEL_ID: &str = "gpt-mock-1";

const SERVER_ERROR_MESSAGE: &str =
    "The server had an error while processing your request. Sorry about that!";

/// OpenAI error `type` and `code` for an HTTP status.
fn error_type_code(status: u16) -> (&'static str, Option<&'static str>) {
    match status {
        401 => ("invalid_request_error", Some("invalid_api_key")),
        403 => ("permission_error", None),
        404 => ("invalid_request_error", None),
        413 => ("invalid_request_error", Some("request_too_large")),
        429 => ("requests", Some("rate_limit_exceeded")),
        s if s >= 500 => ("server_error", None),
        _ => ("invalid_request_error", None),
    }
}

fn default_message(status: u16) -> String {
    match status {
        400 => "Invalid request".to_owned(),
        401 => "Incorrect API key provided.".to_owned(),
        403 => "You are not allowed to access this resource.".to_owned(),
        404 => "Not found".to_owned(),
        413 => "Request too large.".to_owned(),
        429 => "Rate limit reached for requests.".to_owned(),
        503 => "The server is overloaded or not ready yet.".to_owned(),
        s if s >= 500 => SERVER_ERROR_MESSAGE.to_owned(),
        other => format!("aibridge-mock error (status {other})"),
    }
}

/// `{"error":{"message":...,"type":...,"param":null,"code":...}}`.
pub(crate) fn error_body(status: u16, message: Option<&str>) -> Value {
    let message = message.map_or_else(|| default_message(status), str::to_owned);
    let (ty, code) = error_type_code(status);
    json!({"error": {"message": message, "type": ty, "param": null, "code": code}})
}

fn invalid(message: &str, param: Option<&str>, code: Option<&str>) -> Outcome {
    Outcome::Json {
        status: 400,
        body: json!({"error": {
            "message": message,
            "type": "invalid_request_error",
            "param": param,
            "code": code,
        }}),
    }
}

fn missing(param: &str) -> Outcome {
    invalid(
        &format!("Missing required parameter: '{param}'."),
        Some(param),
        Some("missing_required_parameter"),
    )
}

fn model_object(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": CREATED, "owned_by": "aibridge-mock"})
}

pub(crate) fn respond(endpoint: &Endpoint, ctx: &Ctx<'_>) -> Outcome {
    match endpoint {
        Endpoint::ChatCompletions => chat_completions(ctx),
        Endpoint::Responses => responses(ctx),
        Endpoint::ListModels => Outcome::Json {
            status: 200,
            body: json!({"object": "list", "data": [model_object(MODEL_ID)]}),
        },
        Endpoint::GetModel(id) => Outcome::Json {
            status: 200,
            body: model_object(id),
        },
        Endpoint::Messages | Endpoint::CountTokens | Endpoint::NotFound | Endpoint::Bedrock(_) => {
            Outcome::Json {
                status: 404,
                body: json!({"error": {
                    "message": format!("Invalid URL ({} {})", ctx.method, ctx.path),
                    "type": "invalid_request_error",
                    "param": null,
                    "code": null,
                }}),
            }
        }
    }
}

/// The model (required string) of a request object.
fn model_of(map: &Map<String, Value>) -> Result<String, Outcome> {
    match map.get("model") {
        None => Err(missing("model")),
        Some(Value::String(m)) => Ok(m.clone()),
        Some(_) => Err(invalid(
            "Invalid type for 'model': expected a string.",
            Some("model"),
            Some("invalid_type"),
        )),
    }
}

fn is_stream(map: &Map<String, Value>) -> bool {
    map.get("stream").and_then(Value::as_bool) == Some(true)
}

// ---------------------------------------------------------------------------------------------
// Chat completions

fn chat_error_frame(_sent: usize) -> Bytes {
    sse_data(&ordered_json(&json!({"error": {
        "message": SERVER_ERROR_MESSAGE,
        "type": "server_error",
        "param": null,
        "code": null,
    }})))
}

fn chat_usage(prompt: u64, completion: u64) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0
        }
    })
}

fn chat_completions(ctx: &Ctx<'_>) -> Outcome {
    let map = match parse_object(ctx.body) {
        Ok(map) => map,
        Err(e) => return invalid(&e, None, None),
    };
    let model = match model_of(&map) {
        Ok(m) => m,
        Err(e) => return e,
    };
    let n_messages = match map.get("messages") {
        None => return missing("messages"),
        Some(Value::Array(a)) => a.len(),
        Some(_) => {
            return invalid(
                "Invalid type for 'messages': expected an array.",
                Some("messages"),
                Some("invalid_type"),
            );
        }
    };
    let id = format!("chatcmpl-mock-{}", ctx.seq);
    let prompt = input_tokens(n_messages);
    let completion = output_tokens(ctx.deltas);
    let call = ctx.tool_call.map(ToolCall::new);
    let finish_reason = if call.is_some() { "tool_calls" } else { "stop" };
    if !is_stream(&map) {
        let message = match &call {
            None => {
                json!({"role": "assistant", "content": TEXT, "refusal": null, "annotations": []})
            }
            Some(call) => json!({
                "role": "assistant",
                "content": call.text,
                "tool_calls": [{
                    "id": format!("call_mock_{}", call.id),
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments_json}
                }],
                "refusal": null,
                "annotations": []
            }),
        };
        return Outcome::Json {
            status: 200,
            body: json!({
                "id": id,
                "object": "chat.completion",
                "created": CREATED,
                "model": model,
                "choices": [{
                    "index": 0,
                    "message": message,
                    "logprobs": null,
                    "finish_reason": finish_reason
                }],
                "usage": chat_usage(prompt, completion),
                "service_tier": "default",
                "system_fingerprint": null
            }),
        };
    }
    let include_usage = map
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true);
    let chunk = |choices: Value, usage: Option<Value>| {
        let mut c = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": null,
            "choices": choices,
        });
        if include_usage && let Some(obj) = c.as_object_mut() {
            obj.insert("usage".to_owned(), usage.unwrap_or(Value::Null));
        }
        sse_data(&ordered_json(&c))
    };
    let delta = |delta: Value| {
        chunk(
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}]),
            None,
        )
    };
    let role = || json!({"role": "assistant", "content": "", "refusal": null});
    let mut frames = Vec::with_capacity(2 * ctx.deltas + 5);
    match &call {
        None => {
            frames.push(delta(role()));
            for i in 0..ctx.deltas {
                frames.push(delta(json!({"content": piece(i)})));
            }
        }
        Some(call) => {
            let opening = json!([{
                "index": 0,
                "id": format!("call_mock_{}", call.id),
                "type": "function",
                "function": {"name": call.name, "arguments": ""}
            }]);
            match call.text {
                Some(text) => {
                    frames.push(delta(role()));
                    for piece in split(text, ctx.deltas) {
                        frames.push(delta(json!({"content": piece})));
                    }
                    frames.push(delta(json!({"tool_calls": opening})));
                }
                // Without text OpenAI opens with the role and the call in one chunk.
                None => frames.push(delta(json!({
                    "role": "assistant",
                    "content": null,
                    "tool_calls": opening,
                    "refusal": null
                }))),
            }
            for piece in call.argument_pieces(ctx.deltas) {
                frames.push(delta(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                ));
            }
        }
    }
    frames.push(chunk(
        json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": finish_reason}]),
        None,
    ));
    if include_usage {
        frames.push(chunk(json!([]), Some(chat_usage(prompt, completion))));
    }
    frames.push(sse_data("[DONE]"));
    Outcome::Stream {
        frames,
        error_frame: chat_error_frame,
    }
}

// ---------------------------------------------------------------------------------------------
// Responses

fn responses_error_frame(sequence_number: usize) -> Bytes {
    sse_event(
        "error",
        &json!({
            "type": "error",
            "code": "server_error",
            "message": SERVER_ERROR_MESSAGE,
            "param": null,
            "sequence_number": sequence_number,
        }),
    )
}

/// The `response` object; `output`/`usage` empty while in progress.
fn response_object(
    id: &str,
    model: &str,
    status: &str,
    output: Value,
    usage: Option<(u64, u64)>,
) -> Value {
    let usage = usage.map_or(Value::Null, |(input, output)| {
        json!({
            "input_tokens": input,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input + output
        })
    });
    json!({
        "id": id,
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "background": false,
        "error": null,
        "incomplete_details": null,
        "instructions": null,
        "max_output_tokens": null,
        "model": model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null},
        "store": true,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": null,
        "metadata": {}
    })
}

fn message_item(item_id: &str, status: &str, text: Option<&str>) -> Value {
    let content = match text {
        Some(t) => json!([{"type": "output_text", "text": t, "annotations": [], "logprobs": []}]),
        None => json!([]),
    };
    json!({"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content})
}

/// A `function_call` output item with these `arguments` (`""` while in progress).
fn function_call_item(call: &ToolCall<'_>, status: &str, arguments: &str) -> Value {
    json!({
        "id": format!("fc_mock_{}", call.id),
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": format!("call_mock_{}", call.id),
        "name": call.name
    })
}

/// The events of a streamed message item at `output_index` whose text comes in `pieces`, and
/// the completed item.
fn message_events(
    events: &mut Vec<(&'static str, Value)>,
    item_id: &str,
    output_index: usize,
    pieces: &[&str],
) -> Value {
    let text: String = pieces.concat();
    events.push((
        "response.output_item.added",
        json!({"output_index": output_index, "item": message_item(item_id, "in_progress", None)}),
    ));
    events.push((
        "response.content_part.added",
        json!({
            "item_id": item_id, "output_index": output_index, "content_index": 0,
            "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        }),
    ));
    for piece in pieces {
        events.push((
            "response.output_text.delta",
            json!({
                "item_id": item_id, "output_index": output_index, "content_index": 0,
                "delta": piece, "logprobs": []
            }),
        ));
    }
    events.push((
        "response.output_text.done",
        json!({
            "item_id": item_id, "output_index": output_index, "content_index": 0,
            "text": text, "logprobs": []
        }),
    ));
    events.push((
        "response.content_part.done",
        json!({
            "item_id": item_id, "output_index": output_index, "content_index": 0,
            "part": {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        }),
    ));
    let done = message_item(item_id, "completed", Some(&text));
    events.push((
        "response.output_item.done",
        json!({"output_index": output_index, "item": done.clone()}),
    ));
    done
}

/// The events of a streamed `function_call` item at `output_index`, and the completed item.
fn function_call_events(
    events: &mut Vec<(&'static str, Value)>,
    call: &ToolCall<'_>,
    output_index: usize,
    deltas: usize,
) -> Value {
    let item_id = format!("fc_mock_{}", call.id);
    events.push((
        "response.output_item.added",
        json!({"output_index": output_index, "item": function_call_item(call, "in_progress", "")}),
    ));
    for piece in call.argument_pieces(deltas) {
        events.push((
            "response.function_call_arguments.delta",
            json!({"item_id": item_id, "output_index": output_index, "delta": piece}),
        ));
    }
    events.push((
        "response.function_call_arguments.done",
        json!({
            "item_id": item_id, "output_index": output_index,
            "name": call.name, "arguments": call.arguments_json
        }),
    ));
    let done = function_call_item(call, "completed", &call.arguments_json);
    events.push((
        "response.output_item.done",
        json!({"output_index": output_index, "item": done.clone()}),
    ));
    done
}

fn responses(ctx: &Ctx<'_>) -> Outcome {
    let map = match parse_object(ctx.body) {
        Ok(map) => map,
        Err(e) => return invalid(&e, None, None),
    };
    let model = match model_of(&map) {
        Ok(m) => m,
        Err(e) => return e,
    };
    let n_input = match map.get("input") {
        None | Some(Value::Null) => 0,
        Some(Value::String(_)) => 1,
        Some(Value::Array(a)) => a.len(),
        Some(_) => {
            return invalid(
                "Invalid type for 'input': expected a string or an array.",
                Some("input"),
                Some("invalid_type"),
            );
        }
    };
    let id = format!("resp_mock_{}", ctx.seq);
    let item_id = format!("msg_mock_{}", ctx.seq);
    let usage = (input_tokens(n_input), output_tokens(ctx.deltas));
    let call = ctx.tool_call.map(ToolCall::new);
    if !is_stream(&map) {
        let output = match &call {
            None => vec![message_item(&item_id, "completed", Some(TEXT))],
            Some(call) => {
                let mut output: Vec<Value> = call
                    .text
                    .map(|text| message_item(&item_id, "completed", Some(text)))
                    .into_iter()
                    .collect();
                output.push(function_call_item(call, "completed", &call.arguments_json));
                output
            }
        };
        return Outcome::Json {
            status: 200,
            body: response_object(&id, &model, "completed", Value::Array(output), Some(usage)),
        };
    }
    let mut events: Vec<(&str, Value)> = Vec::with_capacity(2 * ctx.deltas + 12);
    let in_progress = response_object(&id, &model, "in_progress", json!([]), None);
    events.push(("response.created", json!({"response": in_progress.clone()})));
    events.push(("response.in_progress", json!({"response": in_progress})));
    let mut output = Vec::with_capacity(2);
    match &call {
        None => {
            let pieces: Vec<&str> = (0..ctx.deltas).map(piece).collect();
            output.push(message_events(&mut events, &item_id, 0, &pieces));
        }
        Some(call) => {
            if let Some(text) = call.text {
                let pieces = split(text, ctx.deltas);
                output.push(message_events(&mut events, &item_id, 0, &pieces));
            }
            let output_index = output.len();
            output.push(function_call_events(
                &mut events,
                call,
                output_index,
                ctx.deltas,
            ));
        }
    }
    events.push((
        "response.completed",
        json!({"response": response_object(&id, &model, "completed", Value::Array(output), Some(usage))}),
    ));
    let frames = events
        .into_iter()
        .enumerate()
        .map(|(seq, (name, mut data))| {
            if let Some(obj) = data.as_object_mut() {
                obj.insert("type".to_owned(), Value::from(name));
                obj.insert("sequence_number".to_owned(), Value::from(seq));
            }
            sse_event(name, &data)
        })
        .collect();
    Outcome::Stream {
        frames,
        error_frame: responses_error_frame,
    }
}
