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

import anthropic
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


def chat_tool_call(stream: bool) -> str:
    if not stream:
        return json.dumps({
            "id": "chatcmpl-tool", "object": "chat.completion", "created": 0, "model": MODEL,
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Let me add. ",
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "bmcp_tools_add", "arguments": '{"a": 2, "b": 3}'}}],
            }}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        })

    def chunk(choices, usage=None):
        body = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": MODEL, "choices": choices}
        if usage:
            body["usage"] = usage
        return f"data: {json.dumps(body)}\n\n"

    return "".join([
        chunk([{"index": 0, "delta": {"role": "assistant", "content": "Let me add. "}, "finish_reason": None}]),
        chunk([{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "bmcp_tools_add", "arguments": '{"a": 2, "b": 3}'}}]}, "finish_reason": None}]),
        chunk([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]),
        chunk([], {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}),
        "data: [DONE]\n\n",
    ])


@pytest.mark.parametrize("stream", [False, True])
def test_chat_tool_call_run_by_the_gateway(mcp_gateway, mock, make_openai_client, stream):
    mock.script("k0", [{"status": 200, "body": chat_tool_call(stream)}])
    client = make_openai_client(mcp_gateway)
    if stream:
        text, usage = "", None
        with client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True) as chunks:
            for c in chunks:
                for choice in c.choices:
                    text += choice.delta.content or ""
                    assert not choice.delta.tool_calls, "the gateway's call is not shown"
                if c.usage is not None:
                    usage = c.usage
    else:
        completion = client.chat.completions.create(model=MODEL, messages=MESSAGES)
        text, usage = completion.choices[0].message.content, completion.usage
        assert not completion.choices[0].message.tool_calls
    assert text.startswith("Let me add. ") and MOCK_TEXT in text
    sent = [json.loads(r["body"]) for r in mock.requests("/v1/chat/completions")]
    assert sent[1]["messages"][-1] == {"role": "tool", "tool_call_id": "call_1", "content": "5"}
    assert usage.prompt_tokens > 10, "summed over both iterations"


def responses_tool_call(stream: bool) -> str:
    call = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "bmcp_tools_add", "arguments": '{"a": 2, "b": 3}', "status": "completed"}
    message = {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed", "content": [{"type": "output_text", "text": "Let me add. ", "annotations": []}]}
    response = {"id": "resp_1", "object": "response", "created_at": 0, "model": MODEL, "status": "completed", "output": [message, call], "parallel_tool_calls": False, "tool_choice": "auto", "tools": [], "usage": {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15, "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}}
    if not stream:
        return json.dumps(response)
    events = [
        {"type": "response.created", "response": {**response, "status": "in_progress", "output": []}},
        {"type": "response.in_progress", "response": {**response, "status": "in_progress", "output": []}},
        {"type": "response.output_item.added", "output_index": 0, "item": {**message, "status": "in_progress", "content": []}},
        {"type": "response.content_part.added", "output_index": 0, "item_id": "msg_1", "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}},
        {"type": "response.output_text.delta", "output_index": 0, "item_id": "msg_1", "content_index": 0, "delta": "Let me add. ", "logprobs": []},
        {"type": "response.content_part.done", "output_index": 0, "item_id": "msg_1", "content_index": 0, "part": message["content"][0]},
        {"type": "response.output_item.done", "output_index": 0, "item": message},
        {"type": "response.output_item.added", "output_index": 1, "item": {**call, "arguments": "", "status": "in_progress"}},
        {"type": "response.function_call_arguments.delta", "output_index": 1, "item_id": "fc_1", "delta": call["arguments"]},
        {"type": "response.output_item.done", "output_index": 1, "item": call},
        {"type": "response.completed", "response": response},
    ]
    return "".join(f"event: {e['type']}\ndata: {json.dumps({**e, 'sequence_number': i})}\n\n" for i, e in enumerate(events))


@pytest.mark.parametrize("stream", [False, True])
def test_responses_tool_call_run_by_the_gateway(mcp_gateway, mock, make_openai_client, stream):
    mock.script("k0", [{"status": 200, "body": responses_tool_call(stream)}])
    client = make_openai_client(mcp_gateway)
    if stream:
        with client.responses.stream(model=MODEL, input="What is 2 + 3?") as events:
            for _ in events:
                pass
            final = events.get_final_response()
    else:
        final = client.responses.create(model=MODEL, input="What is 2 + 3?")
    assert final.output_text.startswith("Let me add. ") and MOCK_TEXT in final.output_text
    assert all(item.type == "message" for item in final.output), "the gateway's call is not shown"
    sent = [json.loads(r["body"]) for r in mock.requests("/v1/responses")]
    assert sent[1]["input"][-1] == {"type": "function_call_output", "call_id": "call_1", "output": "5"}
    assert final.usage.input_tokens > 10, "summed over both iterations"


def test_streamed_continuation_fails_over_on_its_own(mcp_gateway, mock, make_client):
    # Iteration 1 on k0 calls the gateway's tool; iteration 2 gets 429 on k0 and goes to k1.
    mock.script("k0", [
        {"status": 200, "body": tool_use_stream("bmcp_tools_add", {"a": 2, "b": 3})},
        {"status": 429, "headers": [["retry-after", "30"]]},
    ])
    with make_client(mcp_gateway).messages.stream(model=MODEL, max_tokens=64, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
    assert text.startswith("Let me add. ") and MOCK_TEXT in text
    assert mock.seen_keys() == ["k0", "k0", "k1"]
    states = [key["state"] for key in mcp_gateway.keys()]
    assert states == ["cooling", "valid"]


def test_a_client_tool_is_relayed_to_the_client(mcp_gateway, mock, make_client):
    mock.script("k0", [{"status": 200, "body": tool_use_stream("client_search", {"q": "x"})}])
    with make_client(mcp_gateway).messages.stream(model=MODEL, max_tokens=64, messages=MESSAGES) as stream:
        final = stream.get_final_message()
    calls = [block for block in final.content if block.type == "tool_use"]
    assert [(c.name, c.input) for c in calls] == [("client_search", {"q": "x"})]
    assert final.stop_reason == "tool_use"
    assert len(mock.requests()) == 1, "nothing continued by the gateway"


def test_the_iteration_bound_ends_the_stream_with_an_error(start_gateway, mcp_server, mock, make_client, tmp_path):
    config = tmp_path / "bound.toml"
    config.write_text(f'[[mcp_servers]]\nname = "tools"\nurl = "{mcp_server}"\n[mcp]\nmax_iterations = 2\n')
    gw = start_gateway(["k0", "k1"], extra_env={"AIBRIDGE_CONFIG": str(config)})
    again = {"status": 200, "body": tool_use_stream("bmcp_tools_add", {"a": 1, "b": 1})}
    mock.script("k0", [again, again])
    with pytest.raises(anthropic.APIStatusError) as raised:
        with make_client(gw).messages.stream(model=MODEL, max_tokens=64, messages=MESSAGES) as stream:
            "".join(stream.text_stream)
    assert "max_iterations" in str(raised.value)
    assert len(mock.requests()) == 2
