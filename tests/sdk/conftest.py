"""Fixtures for the end-to-end SDK tests: the real `aibridge` binary in front of `aibridge-mock`.

The binaries are found through AIBRIDGE_BIN / AIBRIDGE_MOCK_BIN, defaulting to
<repo>/target/debug/. Nothing here builds them: run `cargo build -p aibridge -p aibridge-mock` first.

* `mock` (per test): one mock per module, reset (POST /_mock/reset) before every test.
* `start_gateway(keys=..., openai_keys=...)` (per test): starts a gateway with the given Anthropic
  and OpenAI key pools (both k0,k1 by default; the mock serves both dialects).
  `gateway` is the common case.
* `make_client(gateway, ...)`: an `anthropic.Anthropic` client pointed at the gateway, max_retries=0.
* `make_openai_client(gateway, ...)`: an `openai.OpenAI` client pointed at the gateway, max_retries=0.

Every process is stopped at teardown (SIGTERM, then SIGKILL), every wait has a timeout, and when a
test fails the tail of the gateway's and the mock's logs is printed with it.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
HTTP_TIMEOUT_S = 30.0
MODEL = "claude-mock-model"
MOCK_TEXT = "Hello from aibridge-mock."

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_MOCK_READY = re.compile(r"aibridge-mock listening on (http://127\.0\.0\.1:\d+)")
_GATEWAY_READY = re.compile(r"aibridge listening on (http://127\.0\.0\.1:\d+)")


def _binary(env_var: str, name: str) -> Path:
    path = Path(os.environ.get(env_var) or REPO_ROOT / "target" / "debug" / name)
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(
            f"{name} binary not found at {path}: build it first with "
            f"`cargo build -p aibridge -p aibridge-mock` or set {env_var}",
            pytrace=False,
        )
    return path


def sdk_major() -> int:
    return int(anthropic.__version__.split(".")[0])


def openai_major() -> int:
    return int(openai.__version__.split(".")[0])


# ---------------------------------------------------------------------------------------------
# processes


class Process:
    """A child process whose stdout and stderr are drained by threads into one bounded log."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, ready: re.Pattern[str]):
        self.name = name
        self.log: deque[str] = deque(maxlen=400)
        self._lines: queue.Queue[str] = queue.Queue()
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        for stream in (self.proc.stdout, self.proc.stderr):
            threading.Thread(target=self._drain, args=(stream,), daemon=True).start()
        self.url = self._wait_ready(ready)

    def _drain(self, stream: Any) -> None:
        for raw in iter(stream.readline, b""):
            line = _ANSI.sub("", raw.decode("utf-8", "replace")).rstrip("\n")
            self.log.append(line)
            self._lines.put(line)
        stream.close()

    def _wait_ready(self, ready: re.Pattern[str]) -> str:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop()
                raise RuntimeError(f"{self.name} not ready after {START_TIMEOUT_S}s:\n{self.tail()}")
            try:
                line = self._lines.get(timeout=min(remaining, 0.2))
            except queue.Empty:
                if self.proc.poll() is not None:
                    time.sleep(0.2)  # let the drain threads catch the last lines
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before ready:\n{self.tail()}")
                continue
            match = ready.search(line)
            if match:
                return match.group(1)

    def tail(self, n: int = 60) -> str:
        return "\n".join(list(self.log)[-n:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT_S)


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIBRIDGE_")}
    env["NO_COLOR"] = "1"
    env.update(extra)
    return env


# ---------------------------------------------------------------------------------------------
# plain HTTP helpers (stdlib, so they work the same with either SDK's HTTP library)


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None):
    """Returns (status, headers, body bytes); HTTP errors are returned, not raised."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers, err.read()


def http_json(method: str, url: str, payload: Any = None) -> Any:
    body = None if payload is None else json.dumps(payload).encode()
    status, _, data = http(method, url, body, {"content-type": "application/json"})
    assert 200 <= status < 300, f"{method} {url} -> {status}: {data[:500]!r}"
    return json.loads(data) if data else None


class Mock:
    def __init__(self, url: str):
        self.url = url

    def reset(self) -> None:
        http_json("POST", f"{self.url}/_mock/reset")

    def script(self, key: str, steps: list[dict[str, Any]], then: dict[str, Any] | None = None) -> None:
        http_json("POST", f"{self.url}/_mock/script", {"key": key, "steps": steps, "then": then})

    def requests(self, path: str | None = "/v1/messages") -> list[dict[str, Any]]:
        """What the mock saw, in arrival order; by default only the Messages calls (a background
        key probe on /v1/models must not disturb the assertions)."""
        seen = http_json("GET", f"{self.url}/_mock/requests")
        return [r for r in seen if path is None or r["path"] == path]

    def seen_keys(self, path: str | None = "/v1/messages") -> list[str]:
        return [r["key"] for r in self.requests(path)]


class Gateway:
    def __init__(self, process: Process):
        self.process = process
        self.url = process.url
        self.anthropic_url = f"{process.url}/anthropic"
        self.openai_url = f"{process.url}/openai/v1"

    def keys(self, provider: str = "anthropic") -> list[dict[str, Any]]:
        data = http_json("GET", f"{self.url}/api/v1/keys")
        for p in data["providers"]:
            if p["name"] == provider:
                return p["keys"]
        raise AssertionError(f"provider {provider} missing from /api/v1/keys: {data}")


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    rep = getattr(request.node, "rep_call", None)
    return rep is None or rep.failed


@pytest.fixture(autouse=True)
def _clean_sdk_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The SDKs read ANTHROPIC_* / OPENAI_* variables and profile files: none may leak into the tests."""
    for name in list(os.environ):
        if name.startswith(("ANTHROPIC_", "OPENAI_")):
            monkeypatch.delenv(name)
    # The 2.x SDK looks for profiles under ~/.config/anthropic when given no explicit credential
    # (the x-api-key header style): give it an empty home.
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))


@pytest.fixture(scope="module")
def _mock_process(tmp_path_factory: pytest.TempPathFactory):
    binary = _binary("AIBRIDGE_MOCK_BIN", "aibridge-mock")
    process = Process(
        "aibridge-mock",
        [str(binary), "--listen", "127.0.0.1:0"],
        _child_env({}),
        tmp_path_factory.mktemp("mock"),
        _MOCK_READY,
    )
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def mock(_mock_process: Process, request: pytest.FixtureRequest):
    if _mock_process.proc.poll() is not None:
        pytest.fail(f"aibridge-mock died ({_mock_process.proc.returncode}):\n{_mock_process.tail()}")
    m = Mock(_mock_process.url)
    m.reset()
    yield m
    if _failed(request):
        print(f"\n----- aibridge-mock log (tail) -----\n{_mock_process.tail(30)}")


@pytest.fixture
def start_gateway(mock: Mock, tmp_path: Path, request: pytest.FixtureRequest):
    started: list[Process] = []
    binary = _binary("AIBRIDGE_BIN", "aibridge")

    def start(
        keys: list[str] = ["k0", "k1"],
        extra_env: dict[str, str] | None = None,
        openai_keys: list[str] = ["k0", "k1"],
    ) -> Gateway:
        workdir = tmp_path / f"gateway{len(started)}"
        workdir.mkdir()
        env = _child_env(
            {
                "AIBRIDGE_LISTEN": "127.0.0.1:0",
                "AIBRIDGE_AUTH": "none",
                "AIBRIDGE_ANTHROPIC_KEYS": ",".join(keys),
                "AIBRIDGE_ANTHROPIC_BASE_URL": mock.url,
                "AIBRIDGE_OPENAI_KEYS": ",".join(openai_keys),
                "AIBRIDGE_OPENAI_BASE_URL": f"{mock.url}/v1",
                **(extra_env or {}),
            }
        )
        process = Process("aibridge", [str(binary), "serve"], env, workdir, _GATEWAY_READY)
        started.append(process)
        return Gateway(process)

    try:
        yield start
    finally:
        failed = _failed(request)
        for process in started:
            process.stop()
            if failed:
                print(f"\n----- aibridge log (tail) -----\n{process.tail(60)}")


@pytest.fixture
def gateway(start_gateway) -> Gateway:
    return start_gateway(["k0", "k1"])


@pytest.fixture
def make_client():
    clients: list[anthropic.Anthropic] = []

    def make(gw: Gateway, *, api_key: str | None = "abk_client_token", max_retries: int = 0, **kwargs: Any):
        if "auth_token" in kwargs or "x-api-key" in {h.lower() for h in kwargs.get("default_headers", {})}:
            api_key = None
        client = anthropic.Anthropic(
            base_url=gw.anthropic_url,
            api_key=api_key,
            max_retries=max_retries,
            timeout=HTTP_TIMEOUT_S,
            **kwargs,
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def make_openai_client():
    clients: list[openai.OpenAI] = []

    def make(gw: Gateway, *, api_key: str = "abk_client_token", max_retries: int = 0, **kwargs: Any):
        client = openai.OpenAI(
            base_url=gw.openai_url,
            api_key=api_key,
            max_retries=max_retries,
            timeout=HTTP_TIMEOUT_S,
            **kwargs,
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
