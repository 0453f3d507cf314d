"""The official Anthropic Python SDK, unmodified, through the real aibridge binary.

Run by run.sh once with the current SDK major and once with the legacy 0.x line. Clients use
max_retries=0 so that the SDK's own retries never hide what the gateway did; one test keeps the
default retries to show that an ordinary client gets through a pool exhaustion.
"""

from __future__ import annotations

import json
import os
import time

import anthropic
import pytest

from conftest import MOCK_TEXT, MODEL, Gateway, Mock, http, sdk_major

MESSAGES = [{"role": "user", "content": "Say hello"}]
# The mock's usage rule: input_tokens = 10 + len(messages); 5 text deltas -> output_tokens 10.
EXPECTED_INPUT_TOKENS = 10 + len(MESSAGES)
EXPECTED_OUTPUT_TOKENS = 10
CLIENT_TOKEN = "abk_client_token"
RATE_LIMITED_MSG = "all configured keys are rate-limited"


def rate_limited(seconds: int | str) -> dict:
    return {"status": 429, "headers": [["retry-after", str(seconds)]]}


def key_state(gw: Gateway, index: int) -> dict:
    keys = gw.keys()
    return next(k for k in keys if k["index"] == index)


def assert_no_client_credentials_forwarded(mock: Mock, secret: str = CLIENT_TOKEN) -> None:
    for req in mock.requests(path=None):
        for name, value in req["headers"]:
            assert secret not in value, f"client credential forwarded upstream in {name}: {value}"
            assert name != "x-aibridge-token", "X-AIBridge-Token must never be forwarded"


def create(client: anthropic.Anthropic, **kwargs):
    return client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES, **kwargs)


def stream_text(client: anthropic.Anthropic):
    with client.messages.stream(model=MODEL, max_tokens=64, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    return text, final


# ---------------------------------------------------------------------------------------------
# central pool, success paths

# How the client authenticates to the gateway. `api_key` is sent as x-api-key by the 0.x SDK and
# as `Authorization: Bearer` by 2.x; the explicit header case keeps x-api-key covered on 2.x.
AUTH_STYLES = {
    "api_key": dict(api_key=CLIENT_TOKEN),
    "auth_token": dict(auth_token=CLIENT_TOKEN),
    "x_api_key_header": dict(default_headers={"X-Api-Key": CLIENT_TOKEN}),
}


@pytest.mark.parametrize("style", AUTH_STYLES)
def test_blocking_create_uses_first_pool_key(gateway, mock, make_client, style):
    client = make_client(gateway, **AUTH_STYLES[style])
    raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=64, messages=MESSAGES)

    sent = {k.lower(): v for k, v in raw.http_request.headers.items()}
    if "x-api-key" in sent:
        assert sent["x-api-key"] == CLIENT_TOKEN
    else:
        assert sent.get("authorization") == f"Bearer {CLIENT_TOKEN}"
    if style == "auth_token":
        assert sent.get("authorization") == f"Bearer {CLIENT_TOKEN}"
    if style == "x_api_key_header":
        assert "authorization" not in sent

    message = raw.parse()
    assert raw.http_response.status_code == 200
    assert message.type == "message"
    assert message.model == MODEL
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == MOCK_TEXT
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == EXPECTED_INPUT_TOKENS
    assert message.usage.output_tokens == EXPECTED_OUTPUT_TOKENS

    assert mock.seen_keys() == ["k0"]
    seen = mock.requests()[0]
    upstream_headers = dict(seen["headers"])
    assert upstream_headers.get("x-api-key") == "k0"
    assert json.loads(seen["body"])["model"] == MODEL
    assert_no_client_credentials_forwarded(mock)


def test_stream_helper_text_and_usage(gateway, mock, make_client):
    client = make_client(gateway)
    text, final = stream_text(client)

    assert text == MOCK_TEXT
    assert final.content[0].text == MOCK_TEXT
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == EXPECTED_INPUT_TOKENS
    assert final.usage.output_tokens == EXPECTED_OUTPUT_TOKENS
    assert mock.seen_keys() == ["k0"]
    assert json.loads(mock.requests()[0]["body"]).get("stream") is True


def test_raw_stream_sees_every_event(gateway, mock, make_client):
    client = make_client(gateway)
    stream = create(client, stream=True)
    with stream:
        types = [event.type for event in stream]

    assert types[0] == "message_start"
    assert types[-1] == "message_stop"
    assert types[1] == "content_block_start"
    assert types.count("content_block_delta") == 5
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert stream.response.headers["content-type"].startswith("text/event-stream")
    assert mock.seen_keys() == ["k0"]


# ---------------------------------------------------------------------------------------------
# failover


def test_failover_on_429_cools_the_key(gateway, mock, make_client):
    mock.script("k0", [rate_limited(30)])
    client = make_client(gateway)

    message = create(client)
    assert message.content[0].text == MOCK_TEXT
    assert mock.seen_keys() == ["k0", "k1"]

    k0 = key_state(gateway, 0)
    assert k0["state"] == "cooling"
    assert k0["last_status"] == 429
    assert 28 <= k0["cooldown_remaining_secs"] <= 30
    assert key_state(gateway, 1)["state"] == "valid"

    second = create(client)
    assert second.content[0].text == MOCK_TEXT
    assert mock.seen_keys() == ["k0", "k1", "k1"], "a cooling key must be skipped"


def test_failover_on_401_disables_the_key(gateway, mock, make_client):
    mock.script("k0", [{"status": 401}, {"status": 401}])  # the request and the key check
    client = make_client(gateway)

    message = create(client)
    assert message.content[0].text == MOCK_TEXT
    assert mock.seen_keys() == ["k0", "k1"]

    k0 = key_state(gateway, 0)
    assert k0["state"] == "disabled"
    assert k0["last_status"] == 401
    assert key_state(gateway, 1)["state"] == "valid"

    create(client)
    assert mock.seen_keys() == ["k0", "k1", "k1"], "a disabled key must be skipped"


def test_stream_failover_on_429(gateway, mock, make_client):
    mock.script("k0", [rate_limited(30)])
    client = make_client(gateway)

    text, final = stream_text(client)
    assert text == MOCK_TEXT
    assert final.usage.output_tokens == EXPECTED_OUTPUT_TOKENS
    assert mock.seen_keys() == ["k0", "k1"]
    assert key_state(gateway, 0)["state"] == "cooling"


# ---------------------------------------------------------------------------------------------
# exhaustion and errors


def test_all_keys_rate_limited_raises_rate_limit_error(gateway, mock, make_client):
    mock.script("k0", [rate_limited(30)])
    mock.script("k1", [rate_limited(20)])
    client = make_client(gateway)

    with pytest.raises(anthropic.RateLimitError) as info:
        create(client)
    err = info.value
    assert err.status_code == 429
    retry_after = err.response.headers.get("retry-after")
    assert retry_after is not None, "pool exhaustion must carry Retry-After"
    assert 19 <= int(retry_after) <= 20, "Retry-After is the ceil of the soonest cooldown (k1: 20 s)"
    assert RATE_LIMITED_MSG in str(err)
    assert err.body["type"] == "error"
    assert err.body["error"]["type"] == "rate_limit_error"
    assert mock.seen_keys() == ["k0", "k1"]

    # Both keys are cooling: the next request is refused without touching the upstream.
    with pytest.raises(anthropic.RateLimitError) as again:
        create(client, stream=True)
    assert again.value.status_code == 429
    assert again.value.response.headers.get("retry-after") is not None
    assert mock.seen_keys() == ["k0", "k1"]


def test_all_keys_revoked_is_502(gateway, mock, make_client):
    mock.script("k0", [{"status": 401}, {"status": 401}])  # the request and the key check
    mock.script("k1", [{"status": 401}, {"status": 401}])
    client = make_client(gateway)

    with pytest.raises(anthropic.APIStatusError) as info:
        create(client)
    err = info.value
    assert err.status_code == 502
    assert isinstance(err, anthropic.InternalServerError)
    assert err.body["type"] == "error"
    assert err.body["error"]["type"] == "api_error"
    assert mock.seen_keys() == ["k0", "k1"]
    assert [k["state"] for k in gateway.keys()] == ["disabled", "disabled"]


def test_mid_stream_error_event_raises(gateway, mock, make_client):
    mock.script("k0", [{"fail_after_events": 3, "failure": "error_event"}])
    client = make_client(gateway)

    seen: list[str] = []
    with pytest.raises(anthropic.APIError) as info:
        with client.messages.stream(model=MODEL, max_tokens=64, messages=MESSAGES) as stream:
            for event in stream:
                seen.append(event.type)
    assert "Overloaded" in str(info.value)
    assert seen[:2] == ["message_start", "content_block_start"]
    assert "message_stop" not in seen
    # The first event was already written: no failover to k1 after the commit point.
    assert mock.seen_keys() == ["k0"]


def test_default_retries_get_through_exhaustion(gateway, mock, make_client):
    """A client with the SDK's default retries waits out the gateway's Retry-After and succeeds."""
    mock.script("k0", [rate_limited(1)])
    mock.script("k1", [rate_limited(1)])
    client = make_client(gateway, max_retries=anthropic.DEFAULT_MAX_RETRIES)
    assert client.max_retries >= 1

    started = time.monotonic()
    message = create(client)
    elapsed = time.monotonic() - started

    assert message.content[0].text == MOCK_TEXT
    assert mock.seen_keys()[:2] == ["k0", "k1"]
    assert mock.seen_keys()[-1] in ("k0", "k1")
    assert len(mock.seen_keys()) == 3
    assert elapsed >= 0.9, "the SDK must have waited for the gateway's Retry-After"


# ---------------------------------------------------------------------------------------------
# BYOK: X-AIBridge-Token selects the client's own key


BYOK_KEY = "user-byok-key"
BYOK_STYLES = {
    "api_key": dict(api_key=BYOK_KEY),
    "x_api_key_header": dict(default_headers={"X-Api-Key": BYOK_KEY}),
}


@pytest.mark.parametrize("style", BYOK_STYLES)
def test_byok_forwards_client_key(gateway, mock, make_client, style):
    kwargs = BYOK_STYLES[style]
    headers = {**kwargs.get("default_headers", {}), "X-AIBridge-Token": "abk_x"}
    client = make_client(gateway, **{**kwargs, "default_headers": headers})

    message = create(client)
    assert message.content[0].text == MOCK_TEXT
    assert mock.seen_keys() == [BYOK_KEY]
    names = [name for name, _ in mock.requests()[0]["headers"]]
    assert "x-aibridge-token" not in names
    assert all("abk_x" not in value for _, value in mock.requests()[0]["headers"])
    assert [k["state"] for k in gateway.keys()] == ["valid", "valid"]


def test_byok_429_passes_through_unchanged(gateway, mock, make_client):
    mock.script(BYOK_KEY, [rate_limited(5)])
    client = make_client(gateway, api_key=BYOK_KEY, default_headers={"X-AIBridge-Token": "abk_x"})

    with pytest.raises(anthropic.RateLimitError) as info:
        create(client)
    err = info.value
    assert err.status_code == 429
    assert err.response.headers.get("retry-after") == "5"
    assert err.body["error"]["type"] == "rate_limit_error"
    assert RATE_LIMITED_MSG not in str(err), "BYOK errors are the upstream's, not the pool's"
    assert mock.seen_keys() == [BYOK_KEY], "BYOK makes one attempt, no failover"
    assert [k["state"] for k in gateway.keys()] == ["valid", "valid"]


# ---------------------------------------------------------------------------------------------
# bad input never reaches the upstream


def test_missing_model_is_400(gateway, mock, make_client):
    client = make_client(gateway)
    with pytest.raises(anthropic.BadRequestError) as info:
        client.post("/v1/messages", cast_to=object, body={"max_tokens": 64, "messages": MESSAGES})
    err = info.value
    assert err.status_code == 400
    assert err.body["type"] == "error"
    assert err.body["error"]["type"] == "invalid_request_error"
    assert mock.requests(path=None) == []


def test_malformed_json_is_400(gateway, mock):
    status, headers, body = http(
        "POST",
        f"{gateway.anthropic_url}/v1/messages",
        b'{"model": "claude", "max_tokens": 64, "messages": [',
        {"content-type": "application/json", "x-api-key": CLIENT_TOKEN, "anthropic-version": "2023-06-01"},
    )
    assert status == 400
    payload = json.loads(body)
    assert payload["type"] == "error"
    assert payload["error"]["type"] == "invalid_request_error"
    assert payload["error"]["message"]
    assert mock.requests(path=None) == []


def test_sdk_version_is_expected_major():
    """Guards run.sh: each venv must hold the SDK line it claims to test (SDK_LINE set by run.sh)."""
    line = os.environ.get("SDK_LINE")
    if line is None:
        pytest.skip(f"SDK_LINE not set (not run by run.sh); anthropic {anthropic.__version__}")
    assert line in ("current", "legacy")
    if line == "legacy":
        assert sdk_major() == 0, anthropic.__version__
    else:
        assert sdk_major() >= 2, anthropic.__version__
