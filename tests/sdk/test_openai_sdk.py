"""The official OpenAI Python SDK, unmodified, through the real aibridge binary.

Run by run.sh once with the current SDK major (3.x) and once with the legacy 1.x line. Clients use
max_retries=0 so that the SDK's own retries never hide what the gateway did; one test keeps the
default retries to show that an ordinary client gets through a pool exhaustion.

The mock serves OpenAI under /v1 (the gateway's AIBRIDGE_OPENAI_BASE_URL is <mock>/v1); its usage
rule is prompt/input tokens = 10 + number of messages (or input items; a string input is one item),
completion/output tokens = 2 * deltas (5 deltas by default), and its text is MOCK_TEXT.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import openai
import pytest

from conftest import MOCK_TEXT, Gateway, Mock, http, openai_major

MODEL = "gpt-mock-model"
MESSAGES = [{"role": "user", "content": "Say hello"}]
INPUT = "Say hello"
CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"
EXPECTED_INPUT_TOKENS = 10 + 1  # one message / one input item
EXPECTED_OUTPUT_TOKENS = 10  # 5 deltas
CLIENT_TOKEN = "abk_client_token"
BYOK_KEY = "user-byok"
# The mock's message for its OpenAI 5xx and mid-stream error frames.
UPSTREAM_SERVER_ERROR = "The server had an error while processing your request. Sorry about that!"


def rate_limited(seconds: int | str) -> dict:
    return {"status": 429, "headers": [["retry-after", str(seconds)]]}


def key_state(gw: Gateway, index: int) -> dict:
    return next(k for k in gw.keys("openai") if k["index"] == index)


def bridged_keys(mock: Mock) -> list[str]:
    """Keys of the chat and responses calls the mock saw, in order (key probes left out)."""
    return [r["key"] for r in mock.requests(path=None) if r["path"] in (CHAT, RESPONSES)]


def upstream_headers(request: dict) -> dict[str, str]:
    return {name: value for name, value in request["headers"]}


def assert_no_client_credentials_forwarded(mock: Mock, secret: str = CLIENT_TOKEN) -> None:
    for req in mock.requests(path=None):
        for name, value in req["headers"]:
            assert secret not in value, f"client credential forwarded upstream in {name}: {value}"
            assert name != "x-aibridge-token", "X-AIBridge-Token must never be forwarded"


# ---------------------------------------------------------------------------------------------
# the four bridged calls, each returning (text, usage as (input, output))


def chat_blocking(client: openai.OpenAI) -> tuple[str, tuple[int, int]]:
    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES)
    return completion.choices[0].message.content, (
        completion.usage.prompt_tokens,
        completion.usage.completion_tokens,
    )


def chat_streaming(client: openai.OpenAI, **kwargs: Any) -> tuple[str, tuple[int, int]]:
    text, usage = "", None
    with client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, **kwargs) as stream:
        for chunk in stream:
            for choice in chunk.choices:
                text += choice.delta.content or ""
            if chunk.usage is not None:
                usage = (chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
    return text, usage


def responses_blocking(client: openai.OpenAI) -> tuple[str, tuple[int, int]]:
    response = client.responses.create(model=MODEL, input=INPUT)
    return response.output_text, (response.usage.input_tokens, response.usage.output_tokens)


def responses_streaming(client: openai.OpenAI) -> tuple[str, tuple[int, int]]:
    with client.responses.stream(model=MODEL, input=INPUT) as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    return final.output_text, (final.usage.input_tokens, final.usage.output_tokens)


CALLS = {
    "chat": (chat_blocking, CHAT),
    "chat_stream": (chat_streaming, CHAT),
    "responses": (responses_blocking, RESPONSES),
    "responses_stream": (responses_streaming, RESPONSES),
}


# ---------------------------------------------------------------------------------------------
# central pool, success paths


def test_chat_blocking_uses_first_pool_key(gateway, mock, make_openai_client):
    client = make_openai_client(gateway)
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)

    sent = {k.lower(): v for k, v in raw.http_request.headers.items()}
    assert sent["authorization"] == f"Bearer {CLIENT_TOKEN}"
    assert str(raw.http_request.url) == f"{gateway.openai_url}/chat/completions"

    completion = raw.parse()
    assert raw.http_response.status_code == 200
    assert completion.object == "chat.completion"
    assert completion.model == MODEL
    assert len(completion.choices) == 1
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == MOCK_TEXT
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == EXPECTED_INPUT_TOKENS
    assert completion.usage.completion_tokens == EXPECTED_OUTPUT_TOKENS
    assert completion.usage.total_tokens == EXPECTED_INPUT_TOKENS + EXPECTED_OUTPUT_TOKENS

    assert mock.seen_keys(CHAT) == ["k0"]
    seen = mock.requests(CHAT)[0]
    assert upstream_headers(seen).get("authorization") == "Bearer k0"
    body = json.loads(seen["body"])
    assert body["model"] == MODEL
    assert body["messages"] == MESSAGES
    assert_no_client_credentials_forwarded(mock)


def test_chat_stream_gets_usage_without_asking(gateway, mock, make_openai_client):
    client = make_openai_client(gateway)
    chunks = []
    with client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True) as stream:
        for chunk in stream:
            chunks.append(chunk)

    assert stream.response.headers["content-type"].startswith("text/event-stream")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == MOCK_TEXT
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"

    with_usage = [c for c in chunks if c.usage is not None]
    assert len(with_usage) == 1, "exactly one usage chunk, although the client did not ask for it"
    usage_chunk = with_usage[0]
    assert usage_chunk is chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage.prompt_tokens == EXPECTED_INPUT_TOKENS
    assert usage_chunk.usage.completion_tokens == EXPECTED_OUTPUT_TOKENS

    assert mock.seen_keys(CHAT) == ["k0"]
    upstream_body = json.loads(mock.requests(CHAT)[0]["body"])
    assert upstream_body["stream"] is True
    assert upstream_body["stream_options"]["include_usage"] is True


def test_chat_stream_with_explicit_include_usage(gateway, mock, make_openai_client):
    client = make_openai_client(gateway)
    text, usage = chat_streaming(client, stream_options={"include_usage": True})

    assert text == MOCK_TEXT
    assert usage == (EXPECTED_INPUT_TOKENS, EXPECTED_OUTPUT_TOKENS)
    assert mock.seen_keys(CHAT) == ["k0"]
    assert json.loads(mock.requests(CHAT)[0]["body"])["stream_options"] == {"include_usage": True}


def test_chat_stream_wire_ends_with_done(gateway, mock):
    """What the SDK parses: `data:` chunks only, the usage chunk, then `data: [DONE]`."""
    status, headers, body = http(
        "POST",
        f"{gateway.openai_url}/chat/completions",
        json.dumps({"model": MODEL, "messages": MESSAGES, "stream": True}).encode(),
        {"content-type": "application/json", "authorization": f"Bearer {CLIENT_TOKEN}"},
    )
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    frames = [f for f in body.decode().split("\n\n") if f.strip()]
    assert frames[-1] == "data: [DONE]"
    assert all(f.startswith("data: ") for f in frames)
    last_chunk = json.loads(frames[-2][len("data: "):])
    assert last_chunk["choices"] == []
    assert last_chunk["usage"]["completion_tokens"] == EXPECTED_OUTPUT_TOKENS


def test_responses_blocking(gateway, mock, make_openai_client):
    client = make_openai_client(gateway)
    response = client.responses.create(model=MODEL, input=INPUT)

    assert response.object == "response"
    assert response.status == "completed"
    assert response.model == MODEL
    assert response.output_text == MOCK_TEXT
    assert [item.type for item in response.output] == ["message"]
    assert response.usage.input_tokens == EXPECTED_INPUT_TOKENS
    assert response.usage.output_tokens == EXPECTED_OUTPUT_TOKENS
    assert response.usage.total_tokens == EXPECTED_INPUT_TOKENS + EXPECTED_OUTPUT_TOKENS

    assert mock.seen_keys(RESPONSES) == ["k0"]
    seen = mock.requests(RESPONSES)[0]
    assert upstream_headers(seen).get("authorization") == "Bearer k0"
    assert json.loads(seen["body"]) == {"model": MODEL, "input": INPUT}
    assert_no_client_credentials_forwarded(mock)


def test_responses_stream_helper(gateway, mock, make_openai_client):
    client = make_openai_client(gateway)
    types: list[str] = []
    deltas: list[str] = []
    with client.responses.stream(model=MODEL, input=INPUT) as stream:
        for event in stream:
            types.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()

    assert "response.completed" in types
    assert types[-1] == "response.completed"
    assert "".join(deltas) == MOCK_TEXT
    assert final.status == "completed"
    assert final.output_text == MOCK_TEXT
    assert final.usage.input_tokens == EXPECTED_INPUT_TOKENS
    assert final.usage.output_tokens == EXPECTED_OUTPUT_TOKENS
    assert mock.seen_keys(RESPONSES) == ["k0"]
    assert json.loads(mock.requests(RESPONSES)[0]["body"])["stream"] is True


def test_responses_raw_stream_sees_every_event(gateway, mock, make_openai_client):
    client = make_openai_client(gateway)
    stream = client.responses.create(model=MODEL, input=INPUT, stream=True)
    with stream:
        events = list(stream)

    types = [e.type for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types.count("response.output_text.delta") == 5
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].response.status == "in_progress"
    completed = events[-1].response
    assert completed.output_text == MOCK_TEXT
    assert completed.usage.output_tokens == EXPECTED_OUTPUT_TOKENS
    assert stream.response.headers["content-type"].startswith("text/event-stream")
    assert mock.seen_keys(RESPONSES) == ["k0"]


# ---------------------------------------------------------------------------------------------
# failover


@pytest.mark.parametrize("call", CALLS)
def test_failover_on_429_cools_the_key(gateway, mock, make_openai_client, call):
    fn, path = CALLS[call]
    mock.script("k0", [rate_limited(30)])
    client = make_openai_client(gateway)

    text, usage = fn(client)
    assert text == MOCK_TEXT
    assert usage == (EXPECTED_INPUT_TOKENS, EXPECTED_OUTPUT_TOKENS)
    assert mock.seen_keys(path) == ["k0", "k1"]
    assert [upstream_headers(r)["authorization"] for r in mock.requests(path)] == ["Bearer k0", "Bearer k1"]

    k0 = key_state(gateway, 0)
    assert k0["state"] == "cooling"
    assert k0["last_status"] == 429
    assert 28 <= k0["cooldown_remaining_secs"] <= 30
    assert key_state(gateway, 1)["state"] == "valid"

    assert fn(client)[0] == MOCK_TEXT
    assert mock.seen_keys(path) == ["k0", "k1", "k1"], "a cooling key must be skipped"
    assert_no_client_credentials_forwarded(mock)


@pytest.mark.parametrize("call", CALLS)
def test_failover_on_401_disables_the_key(gateway, mock, make_openai_client, call):
    fn, path = CALLS[call]
    mock.script("k0", [{"status": 401}, {"status": 401}])  # the request and the key check
    client = make_openai_client(gateway)

    text, _ = fn(client)
    assert text == MOCK_TEXT
    assert mock.seen_keys(path) == ["k0", "k1"]

    k0 = key_state(gateway, 0)
    assert k0["state"] == "disabled"
    assert k0["last_status"] == 401
    assert key_state(gateway, 1)["state"] == "valid"

    fn(client)
    assert mock.seen_keys(path) == ["k0", "k1", "k1"], "a disabled key must be skipped"


def test_key_cooled_by_chat_is_skipped_by_responses(gateway, mock, make_openai_client):
    mock.script("k0", [rate_limited(30)])
    client = make_openai_client(gateway)

    assert chat_blocking(client)[0] == MOCK_TEXT
    assert responses_blocking(client)[0] == MOCK_TEXT
    seen = [(r["path"], r["key"]) for r in mock.requests(path=None) if r["path"] in (CHAT, RESPONSES)]
    assert seen == [(CHAT, "k0"), (CHAT, "k1"), (RESPONSES, "k1")]
    assert bridged_keys(mock) == ["k0", "k1", "k1"]
    assert key_state(gateway, 0)["state"] == "cooling"


def test_openai_and_anthropic_pools_are_separate(gateway, mock, make_openai_client):
    """A 429 on the OpenAI pool's k0 does not cool the Anthropic pool's k0 (same secret, other provider)."""
    mock.script("k0", [rate_limited(30)])
    client = make_openai_client(gateway)
    chat_blocking(client)
    assert key_state(gateway, 0)["state"] == "cooling"
    assert [k["state"] for k in gateway.keys("anthropic")] == ["valid", "valid"]


# ---------------------------------------------------------------------------------------------
# exhaustion and errors


def test_all_keys_rate_limited_raises_rate_limit_error(gateway, mock, make_openai_client):
    mock.script("k0", [rate_limited(30)])
    mock.script("k1", [rate_limited(20)])
    client = make_openai_client(gateway)

    with pytest.raises(openai.RateLimitError) as info:
        chat_blocking(client)
    err = info.value
    assert err.status_code == 429
    retry_after = err.response.headers.get("retry-after")
    assert retry_after is not None, "pool exhaustion must carry Retry-After"
    assert 19 <= int(retry_after) <= 20, "Retry-After is the ceil of the soonest cooldown (k1: 20 s)"
    # The SDK unwraps {"error": {...}} into err.body and exposes its code and type.
    assert err.body["code"] == "rate_limit_exceeded"
    assert err.body["type"] == "rate_limit_error"
    assert err.code == "rate_limit_exceeded"
    assert err.type == "rate_limit_error"
    assert json.loads(err.response.text)["error"]["code"] == "rate_limit_exceeded"
    assert bridged_keys(mock) == ["k0", "k1"]

    # Both keys are cooling: the next requests (any route, streaming too) are refused upstream-free.
    with pytest.raises(openai.RateLimitError) as again:
        client.responses.create(model=MODEL, input=INPUT, stream=True)
    assert again.value.status_code == 429
    assert again.value.response.headers.get("retry-after") is not None
    assert again.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.RateLimitError):
        chat_streaming(client)
    assert bridged_keys(mock) == ["k0", "k1"]


@pytest.mark.parametrize("call", ["chat", "responses_stream"])
def test_all_keys_revoked_is_502(gateway, mock, make_openai_client, call):
    fn, path = CALLS[call]
    mock.script("k0", [{"status": 401}, {"status": 401}])  # the request and the key check
    mock.script("k1", [{"status": 401}, {"status": 401}])
    client = make_openai_client(gateway)

    with pytest.raises(openai.APIStatusError) as info:
        fn(client)
    err = info.value
    assert err.status_code == 502
    assert isinstance(err, openai.InternalServerError)
    assert err.type == "api_error"
    assert err.code == "server_error"
    assert err.response.headers.get("retry-after") is None
    assert mock.seen_keys(path) == ["k0", "k1"]
    assert [k["state"] for k in gateway.keys("openai")] == ["disabled", "disabled"]


@pytest.mark.parametrize("failure", ["error_event", "cut"])
def test_chat_mid_stream_failure_raises(gateway, mock, make_openai_client, failure):
    mock.script("k0", [{"fail_after_events": 2, "failure": failure}])
    client = make_openai_client(gateway)

    chunks = []
    with pytest.raises(openai.APIError) as info:
        with client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True) as stream:
            for chunk in stream:
                chunks.append(chunk)
    err = info.value
    assert not isinstance(err, openai.APIStatusError), "the HTTP status was already 200"
    assert stream.response.status_code == 200
    # The role chunk and the first delta got through before the failure.
    assert len(chunks) == 2
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[1].choices[0].delta.content == "Hello"
    if failure == "error_event":
        # The upstream's own error chunk reaches the SDK unchanged.
        assert err.message == UPSTREAM_SERVER_ERROR
        assert err.body["type"] == "server_error"
    else:
        assert "upstream stream failed" in err.message
        assert err.body["type"] == "api_error"
        assert err.body["code"] == "server_error"
    # The first chunk was already written: no failover to k1 after the commit point.
    assert mock.seen_keys(CHAT) == ["k0"]
    assert key_state(gateway, 0)["state"] == "valid"


@pytest.mark.parametrize("failure", ["error_event", "cut"])
def test_chat_mid_stream_failure_wire(gateway, mock, failure):
    """On the wire: `data: {"error": ...}` then `data: [DONE]`, never a silent truncation."""
    mock.script("k0", [{"fail_after_events": 2, "failure": failure}])
    status, _, body = http(
        "POST",
        f"{gateway.openai_url}/chat/completions",
        json.dumps({"model": MODEL, "messages": MESSAGES, "stream": True}).encode(),
        {"content-type": "application/json", "authorization": f"Bearer {CLIENT_TOKEN}"},
    )
    assert status == 200
    frames = [f for f in body.decode().split("\n\n") if f.strip()]
    assert all(f.startswith("data: ") for f in frames)
    assert frames[-1] == "data: [DONE]"
    chunks = [json.loads(f[len("data: "):]) for f in frames[:-1]]
    assert [c["object"] for c in chunks[:2]] == ["chat.completion.chunk"] * 2
    errors = chunks[2:]
    assert errors and all(set(c) == {"error"} for c in errors), errors
    if failure == "error_event":
        # The upstream's own error chunk comes first, unchanged.
        assert errors[0]["error"]["message"] == UPSTREAM_SERVER_ERROR
        assert errors[0]["error"]["type"] == "server_error"
    else:
        assert errors[0]["error"]["code"] == "server_error"
        assert "upstream stream failed" in errors[0]["error"]["message"]


def _responses_error_expectations(failure: str, event: Any) -> None:
    assert event.type == "error"
    assert event.code == "server_error"
    assert event.sequence_number == 3, "the error event continues the sequence numbers"
    if failure == "error_event":
        assert event.message == UPSTREAM_SERVER_ERROR
    else:
        assert "upstream stream failed" in event.message


@pytest.mark.parametrize("failure", ["error_event", "cut"])
def test_responses_mid_stream_error_raw(gateway, mock, make_openai_client, failure):
    """The SDK does not raise on a Responses `event: error` (its data has no "error" key): it yields
    a ResponseErrorEvent as the last event, and the stream ends without response.completed."""
    mock.script("k0", [{"fail_after_events": 3, "failure": failure}])
    client = make_openai_client(gateway)

    stream = client.responses.create(model=MODEL, input=INPUT, stream=True)
    with stream:
        events = list(stream)
    types = [e.type for e in events]
    assert types == ["response.created", "response.in_progress", "response.output_item.added", "error"]
    _responses_error_expectations(failure, events[-1])
    assert type(events[-1]).__name__ == "ResponseErrorEvent"
    assert mock.seen_keys(RESPONSES) == ["k0"]


@pytest.mark.parametrize("failure", ["error_event", "cut"])
def test_responses_mid_stream_error_helper(gateway, mock, make_openai_client, failure):
    """With the stream helper the error event is yielded, then get_final_response() raises."""
    mock.script("k0", [{"fail_after_events": 3, "failure": failure}])
    client = make_openai_client(gateway)

    events = []
    with client.responses.stream(model=MODEL, input=INPUT) as stream:
        for event in stream:
            events.append(event)
        assert events[-1].type == "error"
        _responses_error_expectations(failure, events[-1])
        assert "response.completed" not in [e.type for e in events]
        with pytest.raises(RuntimeError, match="response.completed"):
            stream.get_final_response()
    assert mock.seen_keys(RESPONSES) == ["k0"]


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def test_responses_failed_event_reaches_the_sdk_unchanged(gateway, mock, make_openai_client):
    response = {
        "id": "resp_failed_1",
        "object": "response",
        "created_at": 1735689600,
        "status": "in_progress",
        "model": MODEL,
        "output": [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "metadata": {},
        "temperature": 1.0,
        "top_p": 1.0,
        "usage": None,
    }
    failed = {
        **response,
        "status": "failed",
        "error": {"code": "server_error", "message": "upstream model crashed"},
    }
    body = _sse("response.created", {"type": "response.created", "sequence_number": 0, "response": response})
    body += _sse("response.failed", {"type": "response.failed", "sequence_number": 1, "response": failed})
    mock.script("k0", [{"headers": [["content-type", "text/event-stream"]], "body": body}])
    client = make_openai_client(gateway)

    stream = client.responses.create(model=MODEL, input=INPUT, stream=True)
    with stream:
        events = list(stream)
    assert [e.type for e in events] == ["response.created", "response.failed"]
    assert events[1].response.status == "failed"
    assert events[1].response.error.code == "server_error"
    assert events[1].response.error.message == "upstream model crashed"
    assert mock.seen_keys(RESPONSES) == ["k0"]
    assert key_state(gateway, 0)["state"] == "valid"


def test_background_responses_is_501(gateway, mock, make_openai_client):
    client = make_openai_client(gateway)
    with pytest.raises(openai.APIStatusError) as info:
        client.responses.create(model=MODEL, input=INPUT, background=True)
    err = info.value
    assert err.status_code == 501
    assert isinstance(err.body, dict) and err.body["message"]
    assert "background" in err.body["message"]
    assert mock.requests(path=None) == []


def test_default_retries_get_through_exhaustion(gateway, mock, make_openai_client):
    """A client with the SDK's default retries waits out the gateway's Retry-After and succeeds."""
    mock.script("k0", [rate_limited(1)])
    mock.script("k1", [rate_limited(1)])
    client = make_openai_client(gateway, max_retries=openai.DEFAULT_MAX_RETRIES)
    assert client.max_retries >= 1

    started = time.monotonic()
    text, _ = chat_blocking(client)
    elapsed = time.monotonic() - started

    assert text == MOCK_TEXT
    keys = bridged_keys(mock)
    assert keys[:2] == ["k0", "k1"]
    assert len(keys) == 3 and keys[-1] in ("k0", "k1")
    assert elapsed >= 0.9, "the SDK must have waited for the gateway's Retry-After"


# ---------------------------------------------------------------------------------------------
# BYOK: X-AIBridge-Token selects the client's own key


@pytest.mark.parametrize("call", CALLS)
def test_byok_forwards_client_key(gateway, mock, make_openai_client, call):
    fn, path = CALLS[call]
    client = make_openai_client(gateway, api_key=BYOK_KEY, default_headers={"X-AIBridge-Token": "abk_x"})

    text, usage = fn(client)
    assert text == MOCK_TEXT
    assert usage == (EXPECTED_INPUT_TOKENS, EXPECTED_OUTPUT_TOKENS)
    assert mock.seen_keys(path) == [BYOK_KEY]
    headers = mock.requests(path)[0]["headers"]
    assert upstream_headers(mock.requests(path)[0])["authorization"] == f"Bearer {BYOK_KEY}"
    assert "x-aibridge-token" not in [name for name, _ in headers]
    assert all("abk_x" not in value for _, value in headers)
    assert [k["state"] for k in gateway.keys("openai")] == ["valid", "valid"]


def test_byok_429_passes_through_unchanged(gateway, mock, make_openai_client):
    mock.script(BYOK_KEY, [rate_limited(5)])
    client = make_openai_client(gateway, api_key=BYOK_KEY, default_headers={"X-AIBridge-Token": "abk_x"})

    with pytest.raises(openai.RateLimitError) as info:
        chat_blocking(client)
    err = info.value
    assert err.status_code == 429
    assert err.response.headers.get("retry-after") == "5"
    # The mock's own error body, not the pool's.
    assert err.body == {
        "message": "Rate limit reached for requests.",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    assert mock.seen_keys(CHAT) == [BYOK_KEY], "BYOK makes one attempt, no failover"
    assert [k["state"] for k in gateway.keys("openai")] == ["valid", "valid"]


# ---------------------------------------------------------------------------------------------
# bad input never reaches the upstream


def test_missing_model_is_400(gateway, mock, make_openai_client):
    client = make_openai_client(gateway)
    with pytest.raises(openai.BadRequestError) as info:
        client.post("/chat/completions", cast_to=object, body={"messages": MESSAGES})
    err = info.value
    assert err.status_code == 400
    assert err.type == "invalid_request_error"
    assert err.body["message"]
    assert mock.requests(path=None) == []


def test_openai_sdk_version_is_expected_major():
    """Guards run.sh: each venv must hold the SDK line it claims to test (SDK_LINE set by run.sh)."""
    line = os.environ.get("SDK_LINE")
    if line is None:
        pytest.skip(f"SDK_LINE not set (not run by run.sh); openai {openai.__version__}")
    assert line in ("current", "legacy")
    if line == "legacy":
        assert openai_major() == 1, openai.__version__
    else:
        assert openai_major() == 3, openai.__version__
