"""AWS Bedrock through the gateway with the official Anthropic SDK: a `bedrock` provider with a
pool of credentials (two access key pairs, one Bedrock API key) in front of aibridge-mock's fake
Bedrock, which recomputes every SigV4 signature with its own code. The gateway's signature is
also checked independently here, with botocore's signer."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import anthropic
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from conftest import MOCK_TEXT

MODEL = "claude-sonnet-4-5"
MODEL_ID = "anthropic.claude-sonnet-4-5-20250929-v1:0"
INVOKE = "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke"
MESSAGES = [{"role": "user", "content": "Say hello"}]


def secret_for(access_key_id: str) -> str:
    # The fake Bedrock's rule (aibridge_mock::bedrock_secret_for).
    return f"{access_key_id}-secret"


def bedrock_gateway(start_gateway, mock, tmp_path: Path, k0_secret: str | None = None):
    config = tmp_path / "bedrock.toml"
    config.write_text(f"""
[[providers]]
name = "bedrock"
type = "bedrock"
region = "us-east-1"
base_url = "{mock.url}"
models = {{ "{MODEL}" = "{MODEL_ID}" }}
credentials = [
  {{ access_key_id = "AKIDK0", secret_access_key = "{k0_secret or secret_for('AKIDK0')}" }},
  {{ access_key_id = "AKIDK1", secret_access_key = "{secret_for('AKIDK1')}", session_token = "session-1" }},
  {{ api_key = "bedrock-key-2" }},
]
""")
    return start_gateway(["k0"], extra_env={"AIBRIDGE_CONFIG": str(config)})


def client_for(gw) -> anthropic.Anthropic:
    # What Claude Code does with ANTHROPIC_BASE_URL=http://HOST:PORT/bedrock.
    return anthropic.Anthropic(base_url=f"{gw.url}/bedrock", api_key="abk_client_token", max_retries=0)


def invocations(mock) -> list[dict]:
    return [r for r in mock.requests(None) if r["path"].startswith("/model/")]


def ask(gw, stream: bool) -> str:
    client = client_for(gw)
    if stream:
        with client.messages.stream(model=MODEL, max_tokens=64, messages=MESSAGES) as events:
            return "".join(events.text_stream)
    reply = client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    return "".join(block.text for block in reply.content if block.type == "text")


@pytest.mark.parametrize("stream", [False, True], ids=["blocking", "stream"])
def test_claude_through_bedrock(start_gateway, mock, tmp_path, stream):
    gw = bedrock_gateway(start_gateway, mock, tmp_path)
    assert ask(gw, stream) == MOCK_TEXT
    seen = invocations(mock)
    assert [r["key"] for r in seen] == ["AKIDK0"]
    action = "invoke-with-response-stream" if stream else "invoke"
    assert seen[0]["path"] == f"/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/{action}"
    body = json.loads(seen[0]["body"])
    assert body["anthropic_version"] == "bedrock-2023-05-31"
    assert "model" not in body and "stream" not in body


def test_the_signature_is_what_botocore_computes(start_gateway, mock, tmp_path):
    gw = bedrock_gateway(start_gateway, mock, tmp_path)
    # Credential 0 throttled: credential 1 (with a session token) serves, so both are checked.
    mock.script("AKIDK0", [{"exception": "ThrottlingException"}])
    assert ask(gw, False) == MOCK_TEXT
    seen = invocations(mock)
    assert [r["key"] for r in seen] == ["AKIDK0", "AKIDK1"]
    for request, (key_id, token) in zip(seen, [("AKIDK0", None), ("AKIDK1", "session-1")]):
        headers = dict(request["headers"])
        authorization = headers["authorization"]
        signed = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
        assert "host" in signed and "x-amz-date" in signed, authorization
        assert ("x-amz-security-token" in signed) == (token is not None)
        aws = AWSRequest(
            method=request["method"],
            url=f"{mock.url}{request['path']}",
            data=request["body"].encode(),
            headers={name: headers[name] for name in signed if name != "host"},
        )
        aws.context["timestamp"] = headers["x-amz-date"]
        signer = SigV4Auth(Credentials(key_id, secret_for(key_id), token), "bedrock", "us-east-1")
        canonical = signer.canonical_request(aws)
        assert "%253A" in canonical, "the path is encoded twice, as AWS does"
        expected = signer.signature(signer.string_to_sign(aws, canonical), aws)
        assert authorization.endswith(f"Signature={expected}"), (authorization, canonical)
        assert urlsplit(aws.url).path == INVOKE


@pytest.mark.parametrize("stream", [False, True], ids=["blocking", "stream"])
def test_failover_on_a_bad_signature_and_on_throttling(start_gateway, mock, tmp_path, stream):
    # Credential 0's secret is wrong (the fake refuses the signature), credential 1 is throttled:
    # the Bedrock API key serves.
    gw = bedrock_gateway(start_gateway, mock, tmp_path, k0_secret="not-the-secret")
    mock.script("AKIDK1", [{"exception": "ThrottlingException"}])
    assert ask(gw, stream) == MOCK_TEXT
    assert [r["key"] for r in invocations(mock)] == ["AKIDK0", "AKIDK1", "bedrock-key-2"]
    states = [key["state"] for key in gw.keys("bedrock")]
    assert states == ["disabled", "cooling", "valid"]


@pytest.mark.parametrize("stream", [False, True], ids=["blocking", "stream"])
def test_an_exhausted_pool_is_a_rate_limit_error(start_gateway, mock, tmp_path, stream):
    gw = bedrock_gateway(start_gateway, mock, tmp_path)
    for key in ["AKIDK0", "AKIDK1", "bedrock-key-2"]:
        mock.script(key, [{"exception": "ThrottlingException", "headers": [["retry-after", "30"]]}])
    with pytest.raises(anthropic.RateLimitError) as raised:
        ask(gw, stream)
    assert 25 <= int(raised.value.response.headers["retry-after"]) <= 30


def test_a_mid_stream_exception_is_an_error_event(start_gateway, mock, tmp_path):
    gw = bedrock_gateway(start_gateway, mock, tmp_path)
    mock.script("AKIDK0", [{"fail_after_events": 3, "failure": "error_event", "exception": "ModelStreamErrorException"}])
    with pytest.raises(anthropic.APIStatusError) as raised:
        ask(gw, True)
    assert raised.value.body["error"]["type"] == "api_error", raised.value.body
    assert len(invocations(mock)) == 1, "no failover after the first event"


def test_a_model_not_enabled_is_relayed(start_gateway, mock, tmp_path):
    gw = bedrock_gateway(start_gateway, mock, tmp_path)
    mock.script("AKIDK0", [{"exception": "AccessDeniedException"}])
    with pytest.raises(anthropic.PermissionDeniedError):
        ask(gw, False)
    assert len(invocations(mock)) == 1, "not the credential's fault: no failover"
    assert [key["state"] for key in gw.keys("bedrock")] == ["valid", "valid", "valid"]
