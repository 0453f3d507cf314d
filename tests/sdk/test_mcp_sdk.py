"""MCP tools run by the gateway, end to end: a real MCP server built with the official Python
`mcp` package, the real aibridge binary, aibridge-mock answering as the model (first with a call
of the gateway's tool, then with its usual text), and the official Anthropic SDK as the client,
blocking and streaming."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import MODEL, MOCK_TEXT, http

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


@pytest.fixture
def mcp_server(tmp_path: Path):
    port = free_port()
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    log = open(tmp_path / "mcp.log", "wb")
    proc = subprocess.Popen([sys.executable, str(script), str(port)], stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert proc.poll() is None, (tmp_path / "mcp.log").read_text()
            assert time.monotonic() < deadline, "the MCP server did not start"
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/mcp"
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


@pytest.fixture
def mcp_gateway(start_gateway, mcp_server, tmp_path: Path):
    config = tmp_path / "aibridge.toml"
    config.write_text(
        f'[[mcp_servers]]\nname = "tools"\nurl = "{mcp_server}"\ntool_deny = "^secret"\n'
    )
    return start_gateway(["k0", "k1"], extra_env={"AIBRIDGE_CONFIG": str(config)})


def tool_use_answer(tool: str, arguments: dict) -> str:
    return json.dumps({
        "id": "msg_tool", "type": "message", "role": "assistant", "model": MODEL,
        "content": [
            {"type": "text", "text": "Let me add. "},
            {"type": "tool_use", "id": "toolu_1", "name": tool, "input": arguments},
        ],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5},
    })


def tool_use_stream(tool: str, arguments: dict) -> str:
    def sse(kind: str, data: dict) -> str:
        return f"event: {kind}\ndata: {json.dumps(data)}\n\n"

    return "".join([
        sse("message_start", {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": MODEL, "content": [], "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 1}}}),
        sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me add. "}}),
        sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        sse("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": tool, "input": {}}}),
        sse("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": json.dumps(arguments)}}),
        sse("content_block_stop", {"type": "content_block_stop", "index": 1}),
        sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None}, "usage": {"output_tokens": 7}}),
        sse("message_stop", {"type": "message_stop"}),
    ])


MESSAGES = [{"role": "user", "content": "What is 2 + 3?"}]


def test_blocking_tool_call_run_by_the_gateway(mcp_gateway, mock, make_client):
    mock.script("k0", [{"status": 200, "body": tool_use_answer("bmcp_tools_add", {"a": 2, "b": 3})}])
    reply = make_client(mcp_gateway).messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    text = "".join(block.text for block in reply.content if block.type == "text")
    assert text.startswith("Let me add. ") and MOCK_TEXT in text
    assert all(block.type == "text" for block in reply.content), "the gateway's call is not shown"
    sent = [json.loads(r["body"]) for r in mock.requests()]
    assert len(sent) == 2
    names = [tool["name"] for tool in sent[0]["tools"]]
    assert "bmcp_tools_add" in names and "bmcp_tools_fail" in names
    assert not any("secret" in name for name in names), names
    result = sent[1]["messages"][2]["content"][0]
    assert (result["tool_use_id"], result["content"], result["is_error"]) == ("toolu_1", "5", False)
    assert reply.usage.input_tokens == 10 + sent_input_tokens(sent[1])


def sent_input_tokens(body: dict) -> int:
    # The mock's rule: input_tokens = 10 + number of messages.
    return 10 + len(body["messages"])


def test_streaming_tool_call_is_one_stream(mcp_gateway, mock, make_client):
    mock.script("k0", [{"status": 200, "body": tool_use_stream("bmcp_tools_add", {"a": 2, "b": 3})}])
    client = make_client(mcp_gateway)
    with client.messages.stream(model=MODEL, max_tokens=64, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.startswith("Let me add. ") and MOCK_TEXT in text
    assert [block.type for block in final.content] == ["text", "text"]
    sent = [json.loads(r["body"]) for r in mock.requests()]
    assert sent[1]["messages"][2]["content"][0]["content"] == "5"
    assert final.usage.input_tokens == 10 + sent_input_tokens(sent[1])


def test_a_tool_error_goes_back_to_the_model(mcp_gateway, mock, make_client):
    mock.script("k0", [{"status": 200, "body": tool_use_answer("bmcp_tools_fail", {})}])
    reply = make_client(mcp_gateway).messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    assert MOCK_TEXT in "".join(block.text for block in reply.content)
    sent = [json.loads(r["body"]) for r in mock.requests()]
    result = sent[1]["messages"][2]["content"][0]
    assert result["is_error"] is True
    # The Python SDK's server reports a raised exception by the tool's name only.
    assert "Error executing tool fail" in result["content"]
