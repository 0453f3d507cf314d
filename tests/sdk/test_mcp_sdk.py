"""MCP tools run by the gateway, end to end: a real MCP server built with the official Python
`mcp` package, the real aibridge binary, aibridge-mock answering as the model (a scripted tool
call in each API's own format, then its usual text), and the official SDKs as the clients: each
scenario for Anthropic Messages, Chat Completions and Responses, blocking and streaming."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import anthropic
import openai
import pytest

from conftest import MODEL, MOCK_TEXT, http_json

SERVER = '''
import sys
from mcp.server.mcpserver import MCPServer

app = MCPServer("tools")

@app.tool()
def add(a: int, b: int) -> int:
    """Adds two numbers."""
    return a + b

@app.tool()
def fail() -> str:
    """Always fails."""
    raise ValueError("the tool failed on purpose")

@app.tool()
def secret_lookup() -> str:
    """Denied by the gateway's configuration."""
    return "classified"

app.run(transport="streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mcp_server(directory: Path, port: int) -> subprocess.Popen:
    """The Python MCP server on `port`, once it accepts connections."""
    script = directory / "server.py"
    script.write_text(SERVER)
    log = open(directory / "mcp.log", "wb")
    proc = subprocess.Popen([sys.executable, str(script), str(port)], stdout=log, stderr=log)
    log.close()
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            assert proc.poll() is None, (directory / "mcp.log").read_text()
            assert time.monotonic() < deadline, "the MCP server did not start"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def mcp_server(tmp_path_factory: pytest.TempPathFactory):
    port = free_port()
    proc = start_mcp_server(tmp_path_factory.mktemp("mcp"), port)
    yield f"http://127.0.0.1:{port}/mcp"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def mcp_gateway(start_gateway, mcp_server, tmp_path: Path):
    config = tmp_path / "aibridge.toml"
    config.write_text(
        f'[[mcp_servers]]\nname = "tools"\nurl = "{mcp_server}"\ntool_deny = "^secret"\n'
    )
    return start_gateway(["k0", "k1"], extra_env={"AIBRIDGE_CONFIG": str(config)})


QUESTION = "What is 2 + 3?"
MESSAGES = [{"role": "user", "content": QUESTION}]
SEARCH_SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}}}
CASES = [(api, stream) for api in ("messages", "chat", "responses") for stream in (False, True)]
CASE_IDS = [f"{api}-{'stream' if stream else 'blocking'}" for api, stream in CASES]
PATHS = {"messages": "/v1/messages", "chat": "/v1/chat/completions", "responses": "/v1/responses"}
PROVIDERS = {"messages": "anthropic", "chat": "openai", "responses": "openai"}


def tool_call(name: str, arguments: dict, text: str | None = "Let me add. ") -> dict:
    """The mock's scripted answer calling `name`, in the format of whichever API it is asked on."""
    call = {"name": name, "arguments": arguments}
    if text:
        call["text"] = text
    return {"tool_call": call}


class StreamError(Exception):
    """An error event in a stream the SDK does not raise itself (Responses `error`)."""


class Answer:
    def __init__(self, text: str, calls: list[tuple[str, dict]], input_tokens: int):
        self.text, self.calls, self.input_tokens = text, calls, input_tokens


def ask(api: str, stream: bool, gw, make_client, make_openai_client) -> Answer:
    """Asks QUESTION through the gateway with the API's official SDK, offering the client's own
    tool `client_search`; what the client got: text, visible tool calls, input tokens."""
    if api == "messages":
        client = make_client(gw)
        kwargs = dict(model=MODEL, max_tokens=64, messages=MESSAGES,
                      tools=[{"name": "client_search", "description": "Searches.", "input_schema": SEARCH_SCHEMA}])
        if stream:
            with client.messages.stream(**kwargs) as events:
                "".join(events.text_stream)
                reply = events.get_final_message()
        else:
            reply = client.messages.create(**kwargs)
        text = "".join(block.text for block in reply.content if block.type == "text")
        calls = [(block.name, block.input) for block in reply.content if block.type == "tool_use"]
        return Answer(text, calls, reply.usage.input_tokens)
    client = make_openai_client(gw)
    if api == "chat":
        kwargs = dict(model=MODEL, messages=MESSAGES, tools=[{"type": "function", "function": {
            "name": "client_search", "description": "Searches.", "parameters": SEARCH_SCHEMA}}])
        if not stream:
            completion = client.chat.completions.create(**kwargs)
            message = completion.choices[0].message
            calls = [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []]
            return Answer(message.content or "", calls, completion.usage.prompt_tokens)
        text, pieces, usage = "", {}, None
        with client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}) as chunks:
            for chunk in chunks:
                for choice in chunk.choices:
                    text += choice.delta.content or ""
                    for call in choice.delta.tool_calls or []:
                        name, arguments = pieces.get(call.index, ("", ""))
                        pieces[call.index] = (name + (call.function.name or ""), arguments + (call.function.arguments or ""))
                if chunk.usage is not None:
                    usage = chunk.usage
        calls = [(name, json.loads(arguments)) for name, arguments in pieces.values()]
        return Answer(text, calls, usage.prompt_tokens)
    kwargs = dict(model=MODEL, input=QUESTION, tools=[{"type": "function", "name": "client_search",
                                                       "description": "Searches.", "parameters": SEARCH_SCHEMA}])
    if stream:
        with client.responses.stream(**kwargs) as events:
            for event in events:
                if event.type == "error":
                    raise StreamError(event.message)
            final = events.get_final_response()
    else:
        final = client.responses.create(**kwargs)
    calls = [(item.name, json.loads(item.arguments)) for item in final.output if item.type == "function_call"]
    return Answer(final.output_text, calls, final.usage.input_tokens)


def sent(mock, api: str) -> list[dict]:
    return [json.loads(r["body"]) for r in mock.requests(PATHS[api])]


def offered(api: str, body: dict) -> list[str]:
    tools = body.get("tools", [])
    if api == "chat":
        return [tool["function"]["name"] for tool in tools]
    return [tool["name"] for tool in tools]


def tool_result(api: str, body: dict) -> tuple[str, str, str, bool]:
    """From a continuation: (id of the call in the assistant turn, id the result answers, the
    result's text, whether it is an error)."""
    if api == "messages":
        call = next(b for b in body["messages"][-2]["content"] if b["type"] == "tool_use")
        result = body["messages"][-1]["content"][0]
        return call["id"], result["tool_use_id"], result["content"], result.get("is_error", False)
    if api == "chat":
        call_id = body["messages"][-2]["tool_calls"][0]["id"]
        result = body["messages"][-1]
        assert result["role"] == "tool", result
        content = result["content"]
        is_error = content.startswith("{") and json.loads(content).get("error") is True
        return call_id, result["tool_call_id"], content, is_error
    call = next(i for i in body["input"] if i.get("type") == "function_call")
    result = body["input"][-1]
    assert result["type"] == "function_call_output", result
    return call["call_id"], result["call_id"], result["output"], result["output"].startswith("invocation error")


def mock_input_tokens(api: str, body: dict) -> int:
    """The mock's rule: 10 + the number of messages (input items; a string is one)."""
    items = body["input"] if api == "responses" else body["messages"]
    return 10 + (1 if isinstance(items, str) else len(items))


def wait_for_records(gw, count: int) -> list[dict]:
    deadline = time.monotonic() + 10
    while True:
        items = http_json("GET", f"{gw.url}/api/v1/interceptions?limit=50")["items"]
        if len(items) >= count and all(item["outcome"] for item in items):
            return items
        assert time.monotonic() < deadline, f"fewer than {count} finished records: {items}"
        time.sleep(0.05)


@pytest.mark.parametrize(("api", "stream"), CASES, ids=CASE_IDS)
def test_a_tool_call_is_run_by_the_gateway_and_recorded(mcp_gateway, mock, make_client, make_openai_client, api, stream):
    mock.script("k0", [tool_call("bmcp_tools_add", {"a": 2, "b": 3})])
    answer = ask(api, stream, mcp_gateway, make_client, make_openai_client)
    assert answer.text.startswith("Let me add. ") and MOCK_TEXT in answer.text, answer.text
    assert answer.calls == [], "the gateway's call is not shown to the client"
    bodies = sent(mock, api)
    assert len(bodies) == 2, "one continuation"
    names = offered(api, bodies[0])
    assert names[0] == "client_search", "the client's own tool comes first, as sent"
    assert "bmcp_tools_add" in names and "bmcp_tools_fail" in names
    assert not any("secret" in name for name in names), f"denied tools are not offered: {names}"
    asked, answered, text, is_error = tool_result(api, bodies[1])
    assert (answered, text, is_error) == (asked, "5", False)
    assert answer.input_tokens == sum(mock_input_tokens(api, body) for body in bodies), \
        "usage summed over both iterations"
    # The record: both iterations' attempts, the run with its server and result.
    record = wait_for_records(mcp_gateway, 1)[0]
    assert [a["key_hint"] is not None for a in record["attempts"]] == [True, True]
    runs = [call for call in record["tool_calls"] if call["injected"]]
    assert len(runs) == 1, record
    assert runs[0]["name"] == "bmcp_tools_add" and runs[0]["tool_call_id"] == asked
    assert json.loads(runs[0]["input"]) == {"a": 2, "b": 3}
    run = runs[0]["run"]
    assert (run["server_name"], run["tool_name"], run["result"], run["error"]) == ("tools", "add", "5", None)
    assert run["server_url"].startswith("http://127.0.0.1:")


@pytest.mark.parametrize(("api", "stream"), CASES, ids=CASE_IDS)
def test_a_continuation_fails_over_on_its_own(mcp_gateway, mock, make_client, make_openai_client, api, stream):
    # Iteration 1 on k0 calls the gateway's tool; iteration 2 gets 429 on k0 and goes to k1.
    mock.script("k0", [tool_call("bmcp_tools_add", {"a": 2, "b": 3}),
                       {"status": 429, "headers": [["retry-after", "30"]]}])
    answer = ask(api, stream, mcp_gateway, make_client, make_openai_client)
    assert answer.text.startswith("Let me add. ") and MOCK_TEXT in answer.text
    assert mock.seen_keys(PATHS[api]) == ["k0", "k0", "k1"]
    bodies = sent(mock, api)
    assert bodies[2] == bodies[1], "the same continuation, on k1"
    assert [key["state"] for key in mcp_gateway.keys(PROVIDERS[api])] == ["cooling", "valid"]


@pytest.mark.parametrize(("api", "stream"), CASES, ids=CASE_IDS)
def test_a_client_tool_is_relayed_to_the_client(mcp_gateway, mock, make_client, make_openai_client, api, stream):
    mock.script("k0", [tool_call("client_search", {"q": "x"})])
    answer = ask(api, stream, mcp_gateway, make_client, make_openai_client)
    assert answer.calls == [("client_search", {"q": "x"})]
    assert answer.text == "Let me add. "
    assert len(sent(mock, api)) == 1, "nothing continued by the gateway"
    record = wait_for_records(mcp_gateway, 1)[0]
    assert [(c["name"], c["injected"]) for c in record["tool_calls"]] == [("client_search", False)]


@pytest.mark.parametrize(("api", "stream"), CASES, ids=CASE_IDS)
def test_a_tool_error_goes_back_to_the_model(mcp_gateway, mock, make_client, make_openai_client, api, stream):
    mock.script("k0", [tool_call("bmcp_tools_fail", {})])
    answer = ask(api, stream, mcp_gateway, make_client, make_openai_client)
    assert MOCK_TEXT in answer.text
    asked, answered, text, is_error = tool_result(api, sent(mock, api)[1])
    assert answered == asked and is_error, text
    # The Python SDK's server reports a raised exception by the tool's name.
    assert "Error executing tool fail" in text, text
    run = wait_for_records(mcp_gateway, 1)[0]["tool_calls"][0]["run"]
    assert run["result"] is None and "Error executing tool fail" in run["error"]


@pytest.mark.parametrize(("api", "stream"), CASES, ids=CASE_IDS)
def test_a_denied_tool_is_never_called(mcp_gateway, mock, make_client, make_openai_client, api, stream):
    # `secret_lookup` exists on the server but the configuration denies it: a model that calls
    # it anyway gets a "not found" error, and the server never sees the call.
    mock.script("k0", [tool_call("bmcp_tools_secret_lookup", {})])
    answer = ask(api, stream, mcp_gateway, make_client, make_openai_client)
    assert MOCK_TEXT in answer.text
    asked, answered, text, is_error = tool_result(api, sent(mock, api)[1])
    assert answered == asked and is_error and "not found" in text, text
    assert "classified" not in json.dumps(sent(mock, api))
    run = wait_for_records(mcp_gateway, 1)[0]["tool_calls"][0]["run"]
    assert run["server_name"] == "" and "not found" in run["error"], run


@pytest.mark.parametrize(("api", "stream"), CASES, ids=CASE_IDS)
def test_the_iteration_bound_ends_with_an_error(start_gateway, mcp_server, mock, make_client, make_openai_client, tmp_path, api, stream):
    config = tmp_path / "bound.toml"
    config.write_text(f'[[mcp_servers]]\nname = "tools"\nurl = "{mcp_server}"\n[mcp]\nmax_iterations = 2\n')
    gw = start_gateway(["k0", "k1"], extra_env={"AIBRIDGE_CONFIG": str(config)})
    again = tool_call("bmcp_tools_add", {"a": 1, "b": 1})
    mock.script("k0", [again, again])
    with pytest.raises((anthropic.APIError, openai.APIError, StreamError)) as raised:
        ask(api, stream, gw, make_client, make_openai_client)
    assert "max_iterations" in str(raised.value)
    assert len(sent(mock, api)) == 2, "no more upstream calls than the bound"
    record = wait_for_records(gw, 1)[0]
    assert record["outcome"] == "gateway_error" and "max_iterations" in record["error"]


def test_a_server_down_at_start_is_picked_up_later(start_gateway, mock, make_client, make_openai_client, tmp_path):
    port = free_port()
    config = tmp_path / "late.toml"
    config.write_text(f'[[mcp_servers]]\nname = "tools"\nurl = "http://127.0.0.1:{port}/mcp"\n')
    gw = start_gateway(["k0", "k1"], extra_env={"AIBRIDGE_CONFIG": str(config)})
    # Nothing to inject yet: every API and mode is served plainly.
    for api, stream in CASES:
        answer = ask(api, stream, gw, make_client, make_openai_client)
        assert answer.text == MOCK_TEXT, (api, stream)
        assert offered(api, sent(mock, api)[-1]) == ["client_search"], (api, stream)
    # The server comes up: the gateway's background retries list it, and the tools are run.
    server = start_mcp_server(tmp_path, port)
    try:
        deadline = time.monotonic() + 45
        while "bmcp_tools_add" not in offered("messages", sent(mock, "messages")[-1]):
            assert time.monotonic() < deadline, "the server was never listed"
            time.sleep(0.5)
            ask("messages", False, gw, make_client, make_openai_client)
        for api, stream in CASES:
            mock.reset()
            mock.script("k0", [tool_call("bmcp_tools_add", {"a": 2, "b": 3})])
            answer = ask(api, stream, gw, make_client, make_openai_client)
            assert MOCK_TEXT in answer.text and answer.calls == [], (api, stream)
            assert tool_result(api, sent(mock, api)[1])[2] == "5", (api, stream)
    finally:
        server.terminate()
        server.wait(timeout=10)
