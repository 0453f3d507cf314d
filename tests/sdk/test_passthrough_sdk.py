"""Passthrough routes through the real binary with the official SDKs: model lists, token
counting and stored responses reach the provider with the pool's key and fail over like the
bridged routes; anything outside the allow-list is 404."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from conftest import MODEL, http

MESSAGES = [{"role": "user", "content": "Count these tokens"}]


def test_anthropic_models_list_uses_the_pool_key(gateway, mock, make_client):
    page = make_client(gateway).models.list()
    assert [m.id for m in page.data] == ["claude-mock-1"]
    assert mock.seen_keys(path="/v1/models") == ["k0"]
    seen = mock.requests(path="/v1/models")[0]
    assert dict(seen["headers"])["x-api-key"] == "k0"


def test_anthropic_models_list_fails_over_on_429(gateway, mock, make_client):
    mock.script("k0", [{"status": 429, "headers": [["retry-after", "30"]]}])
    page = make_client(gateway).models.list()
    assert [m.id for m in page.data] == ["claude-mock-1"]
    assert mock.seen_keys(path="/v1/models") == ["k0", "k1"]
    assert [k["state"] for k in gateway.keys()] == ["cooling", "valid"]


def test_anthropic_models_retrieve(gateway, mock, make_client):
    model = make_client(gateway).models.retrieve("claude-sonnet-4-5")
    assert model.id == "claude-sonnet-4-5"
    assert mock.requests(path="/v1/models/claude-sonnet-4-5")[0]["key"] == "k0"


def test_count_tokens_is_replayed_byte_for_byte_across_a_failover(gateway, mock, make_client):
    mock.script("k0", [{"status": 401}, {"status": 401}])  # the request and the key check
    result = make_client(gateway).messages.count_tokens(model=MODEL, messages=MESSAGES)
    # The mock's rule: 10 + number of messages.
    assert result.input_tokens == 10 + len(MESSAGES)
    seen = mock.requests(path="/v1/messages/count_tokens")
    assert [r["key"] for r in seen] == ["k0", "k1"]
    assert seen[0]["body"] == seen[1]["body"]
    assert json.loads(seen[0]["body"])["messages"] == MESSAGES
    assert [k["state"] for k in gateway.keys()] == ["disabled", "valid"]


def test_a_key_cooled_by_a_passthrough_call_is_skipped_by_messages(gateway, mock, make_client):
    mock.script("k0", [{"status": 429, "headers": [["retry-after", "30"]]}])
    client = make_client(gateway)
    client.models.list()
    message = client.messages.create(model=MODEL, max_tokens=16, messages=MESSAGES)
    assert message.type == "message"
    assert mock.seen_keys(path=None) == ["k0", "k1", "k1"]


def test_anthropic_passthrough_exhaustion_is_a_rate_limit_error(gateway, mock, make_client):
    for key, seconds in (("k0", "5"), ("k1", "3")):
        mock.script(key, [{"status": 429, "headers": [["retry-after", seconds]]}])
    with pytest.raises(anthropic.RateLimitError) as caught:
        make_client(gateway).models.list()
    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "3"
    assert "all configured keys are rate-limited" in str(caught.value)


def test_openai_models_list_fails_over(gateway, mock, make_openai_client):
    mock.script("k0", [{"status": 401}])
    page = make_openai_client(gateway).models.list()
    assert [m.id for m in page.data] == ["gpt-mock-1"]
    seen = mock.requests(path="/v1/models")
    assert [r["key"] for r in seen] == ["k0", "k1"]
    assert dict(seen[1]["headers"])["authorization"] == "Bearer k1"
    assert [k["state"] for k in gateway.keys("openai")] == ["disabled", "valid"]


def test_openai_stored_response_calls_reach_the_upstream(gateway, mock, make_openai_client):
    # The mock keeps no stored responses: its 404 reaches the SDK as the provider's answer.
    with pytest.raises(openai.NotFoundError):
        make_openai_client(gateway).responses.retrieve("resp_does_not_exist")
    seen = mock.requests(path="/v1/responses/resp_does_not_exist")
    assert [(r["method"], r["key"]) for r in seen] == [("GET", "k0")]


def test_routes_outside_the_allow_list_are_404(gateway, mock):
    for path in ("/anthropic/v1/files", "/openai/v1/files", "/openai/v1/batches"):
        status, _, body = http("GET", f"{gateway.url}{path}")
        assert status == 404, path
        assert b"route not supported" in body
    assert mock.requests(path=None) == []
