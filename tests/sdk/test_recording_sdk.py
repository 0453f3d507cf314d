"""Identity and recording with the official SDKs through the real binary: two users with their
own gateway tokens (made with the CLI), blocking and streaming requests with a failover, then the
usage report (CLI and API) must show exactly each user's counts; a revoked token gets 401."""

from __future__ import annotations

import json
import subprocess
import time

import anthropic
import openai
import pytest

from conftest import MODEL, _binary, _child_env, http

MESSAGES = [{"role": "user", "content": "Record me"}]


@pytest.fixture
def tokens_gateway(start_gateway, tmp_path):
    database_url = f"sqlite://{tmp_path / 'recording.db'}"
    gw = start_gateway(extra_env={"AIBRIDGE_AUTH": "tokens", "AIBRIDGE_DATABASE_URL": database_url})

    def cli(*args: str) -> str:
        result = subprocess.run(
            [str(_binary("AIBRIDGE_BIN", "aibridge")), *args],
            env=_child_env({"AIBRIDGE_DATABASE_URL": database_url}),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    gw.cli = cli
    return gw


def new_token(gw, user: str, *flags: str) -> str:
    gw.cli("user", "create", user)
    token = gw.cli("token", "create", "--user", user, *flags).strip()
    assert token.startswith("abk_")
    return token


def admin_get(gw, token: str, path: str):
    status, _, body = http("GET", f"{gw.url}{path}", headers={"authorization": f"Bearer {token}"})
    assert status == 200, body
    return json.loads(body)


def wait_for_records(gw, admin: str, count: int) -> list[dict]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        items = admin_get(gw, admin, "/api/v1/interceptions?limit=50")["items"]
        if len(items) >= count and all(item["outcome"] for item in items):
            return items
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} finished records: {items}")


def test_two_users_get_exactly_their_own_counts(tokens_gateway, mock):
    gw = tokens_gateway
    alice, bob, admin = new_token(gw, "alice"), new_token(gw, "bob"), new_token(gw, "ops", "--admin")
    # Key k0 of both pools is rate-limited once: alice's first request fails over.
    mock.script("k0", [{"status": 429, "headers": [["retry-after", "60"]]}])

    claude = anthropic.Anthropic(base_url=gw.anthropic_url, api_key=alice, max_retries=0)
    message = claude.messages.create(model=MODEL, max_tokens=32, messages=MESSAGES)
    assert message.usage.input_tokens == 11
    with claude.messages.stream(model=MODEL, max_tokens=32, messages=MESSAGES) as stream:
        assert "".join(stream.text_stream) == "Hello from aibridge-mock."

    gpt = openai.OpenAI(base_url=gw.openai_url, api_key=bob, max_retries=0)
    chunks = list(gpt.chat.completions.create(model="gpt-5", messages=MESSAGES, stream=True))
    assert chunks[-1].usage.prompt_tokens == 11

    items = wait_for_records(gw, admin, 3)
    by_user = {}
    for item in items:
        by_user.setdefault(item["user"], []).append(item)
    assert sorted(by_user) == ["alice", "bob"]
    alice_first = by_user["alice"][-1]  # newest first
    assert [(a["status"], a["failover_reason"]) for a in alice_first["attempts"]] == [(429, "rate_limited"), (200, None)]
    assert alice_first["credential"] == "pool"
    # The SDK is not one of the known coding clients, but its User-Agent is kept.
    assert alice_first["client"] == "Unknown"
    assert alice_first["user_agent"].startswith("Anthropic/Python")
    assert [i["streaming"] for i in by_user["alice"]] == [True, False]
    assert by_user["bob"][0]["streaming"] is True

    report = admin_get(gw, admin, "/api/v1/usage?by=user")
    rows = {r["group"]: r for r in report["rows"]}
    assert (rows["alice"]["requests"], rows["alice"]["failovers"]) == (2, 1)
    assert (rows["alice"]["input_tokens"], rows["alice"]["output_tokens"]) == (22, 20)
    assert (rows["bob"]["requests"], rows["bob"]["failovers"]) == (1, 0)
    assert (rows["bob"]["input_tokens"], rows["bob"]["output_tokens"]) == (11, 10)
    assert report["totals"]["requests"] == 3

    cli_rows = {r["group"]: r for r in json.loads(gw.cli("usage", "--by", "user", "--json"))["rows"]}
    assert cli_rows == rows


def test_a_revoked_token_is_refused_by_the_sdk(tokens_gateway, mock):
    gw = tokens_gateway
    token = new_token(gw, "erin", "--label", "laptop")
    client = anthropic.Anthropic(base_url=gw.anthropic_url, api_key=token, max_retries=0)
    assert client.messages.create(model=MODEL, max_tokens=8, messages=MESSAGES).type == "message"
    listing = gw.cli("token", "list")
    assert token[4:] not in listing
    token_id = next(line.split("\t")[0] for line in listing.splitlines() if "\terin\t" in line)
    gw.cli("token", "revoke", token_id)
    with pytest.raises(anthropic.AuthenticationError) as caught:
        client.messages.create(model=MODEL, max_tokens=8, messages=MESSAGES)
    assert caught.value.status_code == 401
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=gw.anthropic_url, api_key="abk_" + "0" * 64, max_retries=0).models.list()
