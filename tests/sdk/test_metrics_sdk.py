"""GET /metrics after the official SDKs went through failovers, streams and an exhaustion,
read with the Prometheus client library's own text parser: exact counts, every family of the
contract, and never a key, a token or a prompt."""

from __future__ import annotations

import anthropic
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import MODEL, http

ANTHROPIC_KEYS = ["sk-ant-metrics-0000", "sk-ant-metrics-1111"]
OPENAI_KEYS = ["sk-proj-metrics-0000", "sk-proj-metrics-1111"]
PROMPT = "Say hello to the metrics test"

CONTRACT_FAMILIES = [
    "aibridge_requests",
    "aibridge_requests_in_flight",
    "aibridge_request_duration_seconds",
    "aibridge_gateway_overhead_seconds",
    "aibridge_upstream_attempts",
    "aibridge_tokens",
    "aibridge_key_state",
    "aibridge_key_cooldown_remaining_seconds",
    "aibridge_key_pool_transitions",
    "aibridge_key_pool_exhaustions",
    "aibridge_key_pool_failover_attempts",
    "aibridge_key_state_store_up",
]


def scrape(gateway) -> tuple[str, dict]:
    status, headers, body = http("GET", f"{gateway.url}/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    samples = {}
    families = set()
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = sample.value
    return text, {"samples": samples, "families": families}


def value(parsed: dict, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in parsed["samples"], f"no series {name}{labels}"
    return parsed["samples"][key]


@pytest.fixture
def metrics_gateway(start_gateway):
    return start_gateway(ANTHROPIC_KEYS, openai_keys=OPENAI_KEYS)


def test_metrics_after_sdk_traffic(metrics_gateway, mock, make_client, make_openai_client):
    gw = metrics_gateway
    _, fresh = scrape(gw)
    for family in CONTRACT_FAMILIES:
        # Tokens are labelled by model: no series until a model answered.
        if family != "aibridge_tokens":
            assert family in fresh["families"], f"{family} missing before any request"

    messages = [{"role": "user", "content": PROMPT}]
    client = make_client(gw)
    # k0 rate-limited for 30 s: the blocking call fails over to k1, the stream goes to k1.
    mock.script(ANTHROPIC_KEYS[0], [{"status": 429, "headers": [["retry-after", "30"]]}])
    reply = client.messages.create(model=MODEL, max_tokens=64, messages=messages)
    assert reply.usage.input_tokens == 11
    with client.messages.stream(model=MODEL, max_tokens=64, messages=messages) as stream:
        "".join(stream.text_stream)
    # k1 rate-limited too: the pool is exhausted.
    mock.script(ANTHROPIC_KEYS[1], [{"status": 429, "headers": [["retry-after", "20"]]}])
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(model=MODEL, max_tokens=64, messages=messages)

    oa = make_openai_client(gw)
    oa.chat.completions.create(model=MODEL, messages=messages)
    with oa.responses.stream(model=MODEL, input=PROMPT) as stream:
        for _ in stream:
            pass
    mock.script(OPENAI_KEYS[0], [{"status": 401}], then={"status": 401})
    # The key's own check (its model list) rejects it too: disabled, failed over.
    completion = oa.chat.completions.create(model=MODEL, messages=messages)
    assert completion.choices[0].message.content

    text, parsed = scrape(gw)
    for family in CONTRACT_FAMILIES:
        assert family in parsed["families"], f"{family} missing"
    anthropic_messages = dict(provider="anthropic", route="/v1/messages", client="Unknown")
    assert value(parsed, "aibridge_requests_total", outcome="completed", **anthropic_messages) == 2
    assert value(parsed, "aibridge_requests_total", outcome="exhausted", **anthropic_messages) == 1
    assert value(parsed, "aibridge_requests_total", outcome="completed", provider="openai",
                 route="/chat/completions", client="Unknown") == 2
    assert value(parsed, "aibridge_requests_total", outcome="completed", provider="openai",
                 route="/responses", client="Unknown") == 1
    assert value(parsed, "aibridge_upstream_attempts_total", provider="anthropic", key="sk...00", status="429") == 1
    assert value(parsed, "aibridge_upstream_attempts_total", provider="anthropic", key="sk...11", status="200") == 2
    assert value(parsed, "aibridge_upstream_attempts_total", provider="anthropic", key="sk...11", status="429") == 1
    assert value(parsed, "aibridge_key_pool_exhaustions_total", provider="anthropic", outcome="rate_limited") == 1
    assert value(parsed, "aibridge_key_pool_transitions_total", provider="anthropic", key="sk...00",
                 reason="rate_limited") == 1
    assert value(parsed, "aibridge_key_pool_transitions_total", provider="openai", key="sk-p...0000",
                 reason="unauthorized") == 1
    assert value(parsed, "aibridge_key_state", provider="openai", key="sk-p...0000", state="disabled") == 1
    assert value(parsed, "aibridge_key_state", provider="anthropic", key="sk...00", state="cooling") == 1
    assert 20 < value(parsed, "aibridge_key_cooldown_remaining_seconds", provider="anthropic", key="sk...00") <= 30
    # Keys tried per pool-paid request: anthropic 2, 1, 1.
    assert value(parsed, "aibridge_key_pool_failover_attempts_count", provider="anthropic") == 3
    assert value(parsed, "aibridge_key_pool_failover_attempts_sum", provider="anthropic") == 4
    # The mock's usage: input 10 + messages, output 2 per delta (5).
    assert value(parsed, "aibridge_tokens_total", provider="anthropic", model=MODEL, type="input") == 22
    assert value(parsed, "aibridge_tokens_total", provider="anthropic", model=MODEL, type="output") == 20
    assert value(parsed, "aibridge_request_duration_seconds_count", provider="anthropic", route="/v1/messages") == 3
    assert value(parsed, "aibridge_gateway_overhead_seconds_count", provider="anthropic", route="/v1/messages") == 3
    assert value(parsed, "aibridge_requests_in_flight", provider="anthropic", route="/v1/messages") == 0
    assert value(parsed, "aibridge_key_state_store_up") == 1

    for secret in ANTHROPIC_KEYS + OPENAI_KEYS + ["abk_client_token", PROMPT]:
        assert secret not in text, f"{secret!r} appears in /metrics"
