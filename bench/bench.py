#!/usr/bin/env python3
"""The aibridge benchmark: the same scenarios directly against the fake upstream, through nginx
(a plain reverse proxy, the anchor), through aibridge, through LiteLLM proxy and through the
Portkey gateway, in one run. `bench/run.sh` installs the tools, builds the binaries and calls
this; see bench/README.md.

Standard library only (the plot is made by plot.py in the bench venv). Every process this starts
is stopped on exit, on Ctrl-C and on SIGTERM; every load run is bounded in requests and time and
targets 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
TOOLS = BENCH / ".tools"
OUT = BENCH / "out"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

# ------------------------------------------------------------------------------------------------
# Profiles

PROFILES = {
    "quick": {
        "rates": [1000],
        "reduced_rates": [1000],
        "rate_seconds": 2,
        "blocking_endpoints": ["anthropic", "openai"],
        "saturation_seconds": 2,
        "saturation_conns": 64,
        "warmup_seconds": 1,
        "stream_endpoints": ["anthropic"],
        "stream_rate": 100,
        "stream_seconds": 2,
        "stream_events": 20,
        "stream_event_delay_ms": 5,
        "failover_rate": 500,
        "failover_seconds": 2,
        "long_streams": 200,
        "long_ramp_rate": 500,
        "long_events": 8,
        "long_event_delay_ms": 200,
        "quiet_wait_seconds": 1,
        "quiet_window_seconds": 0.2,
        "warmup_every_endpoint": False,
        "rerun_noisy": False,
        "ab_pairs": 0,
        "ab_seconds": 5,
    },
    "full": {
        "rates": [50, 250, 500, 1000, 2000],
        "reduced_rates": [250, 1000, 2000],
        "rate_seconds": 6,
        "blocking_endpoints": ["anthropic", "openai"],
        "saturation_seconds": 6,
        "saturation_conns": 64,
        "warmup_seconds": 2,
        "stream_endpoints": ["anthropic", "openai"],
        "stream_rate": 200,
        "stream_seconds": 6,
        "stream_events": 20,
        "stream_event_delay_ms": 5,
        "failover_rate": 500,
        "failover_seconds": 6,
        "long_streams": 1000,
        "long_ramp_rate": 500,
        "long_events": 50,
        "long_event_delay_ms": 200,
        "quiet_wait_seconds": 10,
        "quiet_window_seconds": 0.5,
        "warmup_every_endpoint": True,
        "rerun_noisy": True,
        "ab_pairs": 3,
        "ab_seconds": 5,
    },
}

# Connections of the fixed-rate runs (oha -c): enough for every rate at sub-millisecond latency,
# and a bound on what an overloaded system is asked to hold.
RATE_CONNS = 50
# Most streams aibridge-sse-bench holds open at once (--max-conns).
SSE_MAX_CONNS = 2000
# Keys of the fake upstream: one healthy, one that always answers 429 with Retry-After: 60.
KEY_OK = "k-bench-ok"
KEY_LIMITED = "k-bench-limited"
PROMPT = "Write a haiku about gateways."

# ------------------------------------------------------------------------------------------------
# Process bookkeeping: everything started here is stopped on exit.

STARTED: list[subprocess.Popen] = []
PIDFILE = OUT / "pids"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def record_pids() -> None:
    alive = [p.pid for p in STARTED if p.poll() is None]
    PIDFILE.write_text("".join(f"{pid}\n" for pid in alive))


def spawn(cmd: list[str], name: str, *, env: dict | None = None, cwd: Path | None = None,
          stdout=None) -> subprocess.Popen:
    """Starts a long-running process in its own process group (so it and its children can be
    stopped together), logging to out/NAME.log unless stdout is given."""
    logf = open(OUT / f"{name}.log", "wb")
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=stdout if stdout is not None else logf, stderr=logf,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )
    proc.bench_name = name  # type: ignore[attr-defined]
    STARTED.append(proc)
    record_pids()
    return proc


def stop(proc: subprocess.Popen, grace: float = 5.0) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=5)
    else:
        # The leader is gone; its group may not be.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if proc in STARTED:
        STARTED.remove(proc)
    record_pids()


def stop_all() -> None:
    for proc in list(reversed(STARTED)):
        try:
            stop(proc, grace=3.0)
        except Exception as e:  # keep stopping the others
            print(f"stopping {proc.pid}: {e}", file=sys.stderr)


def on_signal(signum, _frame):
    log(f"signal {signum}: stopping everything")
    stop_all()
    sys.exit(128 + signum)


# ------------------------------------------------------------------------------------------------
# /proc readings


def proc_tree(root: int) -> list[int]:
    """root and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(root: int) -> float:
    """utime + stime (and reaped children's) of a process tree, in seconds."""
    total = 0
    for pid in proc_tree(root):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        # fields[11..14] = utime stime cutime cstime (stat fields 14-17)
        total += sum(int(x) for x in fields[11:15])
    return total / CLK_TCK


def thread_cpu_seconds(root: int) -> dict[str, float]:
    """utime + stime of every live thread of a process tree, summed by thread name (seconds):
    where a process's CPU went (aibridge names its recording threads sqlite-writer and
    sqlite-ckpt; its request path runs on tokio-rt-worker)."""
    out: dict[str, float] = {}
    for pid in proc_tree(root):
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def memory_kb(root: int) -> dict:
    """VmRSS and VmHWM summed over a process tree (kB)."""
    rss = hwm = 0
    for pid in proc_tree(root):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss += int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm += int(line.split()[1])
    return {"rss_kb": rss, "hwm_kb": hwm}


def machine_busy_seconds() -> float:
    """CPU seconds spent not idle on the whole machine since boot."""
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(x) for x in parts[:8]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / CLK_TCK


# ------------------------------------------------------------------------------------------------
# Helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: bytes | None = None, timeout: float = 5.0,
         headers: dict | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_ready(url: str, proc: subprocess.Popen, timeout: float, name: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}; see bench/out/{name}.log")
        try:
            status, _ = http("GET", url, timeout=1.0)
            if status < 500:
                return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{name} not ready after {timeout}s; see bench/out/{name}.log")


def pinned(cpus: str | None, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", cpus, *cmd] if cpus else cmd


def run_bounded(cmd: list[str], timeout: float, out_path: Path) -> dict:
    """Runs a load generator to completion (killed at timeout) and returns its exit status and
    CPU seconds (from wait4's rusage)."""
    with open(out_path, "wb") as out, open(out_path.with_suffix(".err"), "wb") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        STARTED.append(proc)
        record_pids()
        deadline = time.monotonic() + timeout
        status, usage = None, None
        while True:
            pid, st, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                status, usage = st, ru
                break
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        STARTED.remove(proc)
        record_pids()
    return {"exit": proc.returncode, "cpu_s": usage.ru_utime + usage.ru_stime}


# Other processes using more than this many cores during a run make it noisy (rerun once).
NOISY_CORES = 0.25


def wait_quiet(max_wait: float, window: float = 0.5, threshold: float = 0.15) -> float:
    """Waits (at most max_wait s) until the machine's CPU use over a short window is below
    threshold cores (between runs the benchmark's own processes are idle). Returns the load seen."""
    end = time.monotonic() + max_wait
    while True:
        b0, t0 = machine_busy_seconds(), time.monotonic()
        time.sleep(window)
        load = (machine_busy_seconds() - b0) / (time.monotonic() - t0)
        if load < threshold or time.monotonic() >= end:
            return load


# ------------------------------------------------------------------------------------------------
# Systems under test

class Upstreams:
    """The fake upstreams: `main` answers blocking and short streams (and 429s for KEY_LIMITED),
    `long` answers long slow streams."""

    def __init__(self, mock_bin: Path, cpus: str | None, prof: dict):
        self.main_proc, self.main = self._start(mock_bin, cpus, "mock-main", [
            "--stream-events", str(prof["stream_events"]),
            "--event-delay-ms", str(prof["stream_event_delay_ms"]),
        ])
        self.long_proc, self.long = self._start(mock_bin, cpus, "mock-long", [
            "--stream-events", str(prof["long_events"]),
            "--event-delay-ms", str(prof["long_event_delay_ms"]),
        ])
        script = {"key": KEY_LIMITED, "then": {"status": 429, "headers": [["retry-after", "60"]]}}
        for base in (self.main, self.long):
            status, _ = http("POST", f"{base}/_mock/script", json.dumps(script).encode(),
                             headers={"content-type": "application/json"})
            assert status == 204, status

    @staticmethod
    def _start(mock_bin, cpus, name, extra):
        r, w = os.pipe()
        proc = spawn(pinned(cpus, [str(mock_bin), "--listen", "127.0.0.1:0", "--no-record",
                                   *extra]), name, stdout=w)
        os.close(w)
        with os.fdopen(r) as f:
            line = f.readline().strip()
        prefix = "aibridge-mock listening on "
        if not line.startswith(prefix):
            raise RuntimeError(f"{name}: unexpected first line {line!r}")
        return proc, line[len(prefix):]

    def cpu(self) -> float:
        return cpu_seconds(self.main_proc.pid) + cpu_seconds(self.long_proc.pid)

    def hits(self) -> dict:
        out = {}
        for base in (self.main, self.long):
            _, body = http("GET", f"{base}/_mock/stats")
            for k, v in json.loads(body)["hits"].items():
                out[k] = out.get(k, 0) + v
        return out

    def reset_counts(self) -> None:
        # Reset forgets scripts too: put the 429 script back.
        script = {"key": KEY_LIMITED, "then": {"status": 429, "headers": [["retry-after", "60"]]}}
        for base in (self.main, self.long):
            http("POST", f"{base}/_mock/reset")
            http("POST", f"{base}/_mock/script", json.dumps(script).encode(),
                 headers={"content-type": "application/json"})


def anthropic_body(model: str, stream: bool) -> dict:
    body = {"model": model, "max_tokens": 256,
            "messages": [{"role": "user", "content": PROMPT}]}
    if stream:
        body["stream"] = True
    return body


def openai_body(model: str, stream: bool) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}]}
    if stream:
        # aibridge asks the upstream for usage on every chat stream; ask for it everywhere.
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


class System:
    """One way from the client to the fake upstream. `target(kind)` gives (url, headers, body)
    for a request kind: anthropic, openai, anthropic_stream, openai_stream, failover, long."""

    name = "?"
    label = "?"
    proc: subprocess.Popen | None = None
    # A reduced scenario set (fewer rates, one stream endpoint, no failover): for variants.
    reduced = False

    def start(self, up: Upstreams, cpus: str | None) -> None:
        pass

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def version(self) -> str:
        return ""

    def cpu(self) -> float | None:
        return cpu_seconds(self.proc.pid) if self.proc else None

    def memory(self) -> dict | None:
        return memory_kb(self.proc.pid) if self.proc else None

    def threads_cpu(self) -> dict[str, float]:
        return thread_cpu_seconds(self.proc.pid) if self.proc else {}

    def target(self, kind: str) -> tuple[str, dict, dict]:
        raise NotImplementedError


class Direct(System):
    name, label = "direct", "direct (no gateway)"

    def start(self, up, cpus):
        self.up = up

    def target(self, kind):
        a_h = {"x-api-key": KEY_OK, "anthropic-version": "2023-06-01"}
        o_h = {"authorization": f"Bearer {KEY_OK}"}
        m, lg = self.up.main, self.up.long
        return {
            "anthropic": (f"{m}/v1/messages", a_h, anthropic_body("claude-mock-1", False)),
            "openai": (f"{m}/v1/chat/completions", o_h, openai_body("gpt-mock-1", False)),
            "anthropic_stream": (f"{m}/v1/messages", a_h, anthropic_body("claude-mock-1", True)),
            "openai_stream": (f"{m}/v1/chat/completions", o_h, openai_body("gpt-mock-1", True)),
            "failover": (f"{m}/v1/messages", a_h, anthropic_body("claude-mock-1", False)),
            "long": (f"{lg}/v1/messages", a_h, anthropic_body("claude-mock-1", True)),
        }[kind]


class AIBridge(System):
    name, label = "aibridge", "aibridge"

    def __init__(self, binary: Path, extra_env: dict | None = None, name: str | None = None,
                 label: str | None = None, reduced: bool = False):
        self.binary = binary
        self.extra_env = extra_env or {}
        self.reduced = reduced
        if name:
            self.name = self.label = name
        if label:
            self.label = label

    def version(self):
        r = subprocess.run([str(self.binary), "--version"], capture_output=True, text=True)
        return r.stdout.strip()

    def start(self, up, cpus):
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        config = OUT / f"{self.name}.toml"
        db = OUT / f"{self.name}.db"
        for f in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            f.unlink(missing_ok=True)
        # The two extra pools: failover (first key always 429, Retry-After 60) and long streams.
        config.write_text(
            "[[providers]]\n"
            'name = "anthropic-fo"\ntype = "anthropic"\n'
            f'base_url = "{up.main}"\nkeys = ["{KEY_LIMITED}", "{KEY_OK}"]\n\n'
            "[[providers]]\n"
            'name = "anthropic-long"\ntype = "anthropic"\n'
            f'base_url = "{up.long}"\nkeys = ["{KEY_OK}"]\n'
        )
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "AIBRIDGE_LISTEN": f"127.0.0.1:{port}",
            "AIBRIDGE_AUTH": "none",
            "AIBRIDGE_ANTHROPIC_KEYS": KEY_OK,
            "AIBRIDGE_OPENAI_KEYS": KEY_OK,
            "AIBRIDGE_ANTHROPIC_BASE_URL": up.main,
            "AIBRIDGE_OPENAI_BASE_URL": f"{up.main}/v1",
            "AIBRIDGE_LOG": "warn",
            "AIBRIDGE_DATABASE_URL": f"sqlite://{db}",
            **self.extra_env,
        }
        self.proc = spawn(pinned(cpus, [str(self.binary), "serve", "--config", str(config)]),
                          self.name, env=env, cwd=OUT)
        self.ready_s = wait_ready(f"{self.base}/healthz", self.proc, 30, self.name)

    def target(self, kind):
        b = self.base
        a_h = {"x-api-key": "bench-gateway-token", "anthropic-version": "2023-06-01"}
        o_h = {"authorization": "Bearer bench-gateway-token"}
        return {
            "anthropic": (f"{b}/anthropic/v1/messages", a_h,
                          anthropic_body("claude-mock-1", False)),
            "openai": (f"{b}/openai/v1/chat/completions", o_h, openai_body("gpt-mock-1", False)),
            "anthropic_stream": (f"{b}/anthropic/v1/messages", a_h,
                                 anthropic_body("claude-mock-1", True)),
            "openai_stream": (f"{b}/openai/v1/chat/completions", o_h,
                              openai_body("gpt-mock-1", True)),
            "failover": (f"{b}/anthropic-fo/v1/messages", a_h,
                         anthropic_body("claude-mock-1", False)),
            "long": (f"{b}/anthropic-long/v1/messages", a_h,
                     anthropic_body("claude-mock-1", True)),
        }[kind]


class LiteLLM(System):
    name, label = "litellm", "LiteLLM proxy"

    def __init__(self, venv: Path):
        self.venv = venv

    def version(self):
        r = subprocess.run([str(self.venv / "bin" / "python"), "-c",
                            "import importlib.metadata as m; print(m.version('litellm'))"],
                           capture_output=True, text=True)
        return f"litellm {r.stdout.strip()}"

    def start(self, up, cpus):
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        config = OUT / "litellm.yaml"

        def deployment(name, model, base, key, order=None):
            extra = f"      order: {order}\n" if order else ""
            return (f"  - model_name: {name}\n    litellm_params:\n      model: {model}\n"
                    f"      api_base: {base}\n      api_key: {key}\n{extra}")

        config.write_text(
            "model_list:\n"
            + deployment("claude-mock", "anthropic/claude-mock-1", up.main, KEY_OK)
            + deployment("gpt-mock", "openai/gpt-mock-1", f"{up.main}/v1", KEY_OK)
            + deployment("claude-failover", "anthropic/claude-mock-1", up.main, KEY_LIMITED, 1)
            + deployment("claude-failover", "anthropic/claude-mock-1", up.main, KEY_OK, 2)
            + deployment("claude-long", "anthropic/claude-mock-1", up.long, KEY_OK)
            + "router_settings:\n  num_retries: 2\n"
            + "litellm_settings:\n  drop_params: true\n  telemetry: false\n"
        )
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            # No fetch of the model cost map from the internet, no telemetry: loopback only.
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_TELEMETRY": "False",
            # Like aibridge's AIBRIDGE_AUTH=none: no gateway authentication.
            "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
            "LITELLM_LOG": "ERROR",
            "NO_PROXY": "*",
        }
        self.proc = spawn(pinned(cpus, [str(self.venv / "bin" / "litellm"), "--config", str(config),
                                        "--host", "127.0.0.1", "--port", str(port),
                                        "--num_workers", "1"]),
                          self.name, env=env, cwd=OUT)
        self.ready_s = wait_ready(f"{self.base}/health/liveliness", self.proc, 180, self.name)

    def target(self, kind):
        b = self.base
        h = {"anthropic-version": "2023-06-01"}
        return {
            "anthropic": (f"{b}/v1/messages", h, anthropic_body("claude-mock", False)),
            "openai": (f"{b}/v1/chat/completions", {}, openai_body("gpt-mock", False)),
            "anthropic_stream": (f"{b}/v1/messages", h, anthropic_body("claude-mock", True)),
            "openai_stream": (f"{b}/v1/chat/completions", {}, openai_body("gpt-mock", True)),
            "failover": (f"{b}/v1/messages", h, anthropic_body("claude-failover", False)),
            "long": (f"{b}/v1/messages", h, anthropic_body("claude-long", True)),
        }[kind]


class Portkey(System):
    name, label = "portkey", "Portkey gateway"

    def __init__(self, root: Path):
        self.root = root
        self.script = root / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"

    def version(self):
        pkg = json.loads((self.script.parent.parent / "package.json").read_text())
        node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
        hono = json.loads((self.root / "node_modules" / "@hono" / "node-server" /
                           "package.json").read_text())["version"]
        return f"@portkey-ai/gateway {pkg['version']} (node {node}, @hono/node-server {hono})"

    def start(self, up, cpus):
        self.up = up
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NODE_ENV": "production",
               "HOME": os.environ.get("HOME", "/tmp")}
        self.proc = spawn(pinned(cpus, ["node", str(self.script), f"--port={port}", "--headless"]),
                          self.name, env=env, cwd=OUT)
        self.ready_s = wait_ready(f"{self.base}/", self.proc, 60, self.name)

    def target(self, kind):
        b, m, lg = self.base, self.up.main, self.up.long
        a_h = {"x-portkey-provider": "anthropic", "x-portkey-custom-host": f"{m}/v1",
               "x-api-key": KEY_OK, "anthropic-version": "2023-06-01"}
        o_h = {"x-portkey-provider": "openai", "x-portkey-custom-host": f"{m}/v1",
               "authorization": f"Bearer {KEY_OK}"}
        fo = {"strategy": {"mode": "fallback", "on_status_codes": [429]},
              "targets": [{"provider": "anthropic", "api_key": k, "custom_host": f"{m}/v1"}
                          for k in (KEY_LIMITED, KEY_OK)]}
        fo_h = {"x-portkey-config": json.dumps(fo, separators=(",", ":")),
                "anthropic-version": "2023-06-01"}
        long_h = dict(a_h, **{"x-portkey-custom-host": f"{lg}/v1"})
        return {
            "anthropic": (f"{b}/v1/messages", a_h, anthropic_body("claude-mock-1", False)),
            "openai": (f"{b}/v1/chat/completions", o_h, openai_body("gpt-mock-1", False)),
            "anthropic_stream": (f"{b}/v1/messages", a_h, anthropic_body("claude-mock-1", True)),
            "openai_stream": (f"{b}/v1/chat/completions", o_h, openai_body("gpt-mock-1", True)),
            "failover": (f"{b}/v1/messages", fo_h, anthropic_body("claude-mock-1", False)),
            "long": (f"{b}/v1/messages", long_h, anthropic_body("claude-mock-1", True)),
        }[kind]


class Nginx(System):
    """nginx as a plain reverse proxy: the anchor a gateway is compared with. It does what every
    gateway here does at the least (accept, parse the request line and headers, put the pool's key
    on, keep upstream connections alive, relay the body as it comes) and nothing else: no JSON
    parse, no usage accounting, no key health. Same routes as aibridge; the failover route tries
    the 429 key, then the healthy one, on every request (no memory of Retry-After)."""

    name, label = "nginx", "nginx (reverse proxy)"

    def __init__(self, binary: Path, prof: dict):
        self.binary = binary
        # Two sockets per proxied request (client and upstream): room for the most requests any
        # scenario holds open at once (long streams, the stream client's cap, oha's connections).
        most = max(prof["long_streams"], SSE_MAX_CONNS, prof["saturation_conns"], RATE_CONNS)
        self.worker_connections = 2 * most + 256
        self.rlimit = self.worker_connections + 256

    def version(self):
        r = subprocess.run([str(self.binary), "-v"], capture_output=True, text=True)
        return (r.stderr or r.stdout).strip().removeprefix("nginx version: ")

    def config(self, port: int, up: Upstreams, d: Path) -> str:
        main_hp = up.main.removeprefix("http://")
        long_hp = up.long.removeprefix("http://")

        # proxy_set_header in a location replaces every one inherited from outside it: each
        # location states them all.
        def headers(key_header: str, key_value: str, drop: str) -> str:
            return (f"            proxy_set_header {key_header} \"{key_value}\";\n"
                    f"            proxy_set_header {drop} \"\";\n"
                    "            proxy_set_header Connection \"\";\n")
        anthropic = headers("x-api-key", KEY_OK, "Authorization")
        openai = headers("Authorization", f"Bearer {KEY_OK}", "x-api-key")
        # As root the worker would switch to nobody: run it as whoever runs the benchmark.
        user = (f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else "")
        temps = "".join(f"    {k}_temp_path {d}/tmp/{k};\n"
                        for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        return (
            "# Generated by bench/bench.py: nginx as a plain reverse proxy to the fake upstreams.\n"
            "daemon off;\n"
            f"{user}"
            "worker_processes 1;\n"
            f"worker_rlimit_nofile {self.rlimit};\n"
            f"pid {d}/nginx.pid;\n"
            f"error_log {d}/error.log warn;\n"
            f"events {{\n    worker_connections {self.worker_connections};\n}}\n"
            "http {\n"
            "    access_log off;\n"
            f"{temps}"
            # Connections stay open as long as a gateway's would (the default closes after 1000).
            "    keepalive_requests 1000000;\n"
            "    proxy_http_version 1.1;\n"
            # Stream both ways: answers (SSE) as they come, request bodies as they come.
            "    proxy_buffering off;\n"
            "    proxy_request_buffering off;\n"
            f"    upstream mock_main {{\n        server {main_hp};\n        keepalive 64;\n"
            "        keepalive_requests 1000000;\n    }\n"
            f"    upstream mock_long {{\n        server {long_hp};\n        keepalive 64;\n"
            "        keepalive_requests 1000000;\n    }\n"
            "    server {\n"
            f"        listen 127.0.0.1:{port} backlog=4096;\n"
            "        location = /healthz {\n            return 200 \"ok\\n\";\n        }\n"
            # /PREFIX/v1/... -> the upstream's /v1/..., like aibridge's routes.
            "        location /anthropic/ {\n            proxy_pass http://mock_main/;\n"
            f"{anthropic}        }}\n"
            "        location /openai/ {\n            proxy_pass http://mock_main/;\n"
            f"{openai}        }}\n"
            "        location /anthropic-long/ {\n            proxy_pass http://mock_long/;\n"
            f"{anthropic}        }}\n"
            # Failover: the limited key first; its 429 is caught and the request sent again with
            # the healthy key (the body is buffered here, in memory, so it can be sent twice).
            "        location /anthropic-fo/ {\n            proxy_pass http://mock_main/;\n"
            f"{headers('x-api-key', KEY_LIMITED, 'Authorization')}"
            "            proxy_request_buffering on;\n"
            "            proxy_intercept_errors on;\n"
            "            error_page 429 = @anthropic_fo_next;\n        }\n"
            "        location @anthropic_fo_next {\n"
            "            rewrite ^/anthropic-fo/(.*)$ /$1 break;\n"
            "            proxy_pass http://mock_main;\n"
            f"{anthropic}        }}\n"
            "    }\n"
            "}\n"
        )

    def start(self, up, cpus):
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        d = OUT / "nginx"
        shutil.rmtree(d, ignore_errors=True)
        (d / "tmp").mkdir(parents=True)
        conf = d / "nginx.conf"
        conf.write_text(self.config(port, up, d))
        # -e: the log nginx writes before it has read the configuration; -p: no path under /etc,
        # /var or /run is used.
        self.proc = spawn(pinned(cpus, [str(self.binary), "-p", f"{d}/", "-c", str(conf),
                                        "-e", str(d / "error.log")]),
                          self.name, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                          cwd=OUT)
        self.ready_s = wait_ready(f"{self.base}/healthz", self.proc, 30, self.name)

    def target(self, kind):
        b = self.base
        a_h = {"x-api-key": "bench-gateway-token", "anthropic-version": "2023-06-01"}
        o_h = {"authorization": "Bearer bench-gateway-token"}
        return {
            "anthropic": (f"{b}/anthropic/v1/messages", a_h,
                          anthropic_body("claude-mock-1", False)),
            "openai": (f"{b}/openai/v1/chat/completions", o_h, openai_body("gpt-mock-1", False)),
            "anthropic_stream": (f"{b}/anthropic/v1/messages", a_h,
                                 anthropic_body("claude-mock-1", True)),
            "openai_stream": (f"{b}/openai/v1/chat/completions", o_h,
                              openai_body("gpt-mock-1", True)),
            "failover": (f"{b}/anthropic-fo/v1/messages", a_h,
                         anthropic_body("claude-mock-1", False)),
            "long": (f"{b}/anthropic-long/v1/messages", a_h,
                     anthropic_body("claude-mock-1", True)),
        }[kind]

# ------------------------------------------------------------------------------------------------
# Load runs


class Runner:
    def __init__(self, args, prof, up: Upstreams, oha: Path, sse: Path, deadline: float):
        self.args, self.prof, self.up, self.oha, self.sse = args, prof, up, oha, sse
        self.deadline = deadline
        # Reruns of noisy runs only until this system's share of the budget is used up.
        self.rerun_until = deadline
        self.quiet_wait = prof["quiet_wait_seconds"]
        self.seq = 0

    def measure(self, system: System, label: str, cmd: list[str], timeout: float,
                parse, pre=None, post=None) -> dict:
        """Runs one load (after waiting for the machine to be quiet); when other processes took
        more than NOISY_CORES during it, waits and runs it once more, keeping the quieter one."""
        window = self.prof["quiet_window_seconds"]
        wait_quiet(self.quiet_wait, window)
        first = self.measure_once(system, label, cmd, timeout, parse, pre, post)
        if (not self.prof["rerun_noisy"] or first["foreign_cores"] <= NOISY_CORES
                or time.monotonic() > self.rerun_until):
            return first
        log(f"  {label}: {first['foreign_cores']:.2f} cores of other load during the run; "
            "running it again")
        wait_quiet(self.quiet_wait * 2, window)
        second = self.measure_once(system, label + "-again", cmd, timeout, parse, pre, post)
        best = min(first, second, key=lambda r: r["foreign_cores"])
        best["noisy_attempts"] = 2
        return best

    def measure_once(self, system: System, label: str, cmd: list[str], timeout: float,
                     parse, pre=None, post=None) -> dict:
        """Runs one load, with the CPU of every party and the foreign load around it."""
        if pre:
            pre()
        self.seq += 1
        out_path = OUT / "runs" / f"{self.seq:03d}-{system.name}-{label}.json"
        out_path.parent.mkdir(exist_ok=True)
        threads0 = system.threads_cpu()
        gw0, mock0, busy0, t0 = system.cpu(), self.up.cpu(), machine_busy_seconds(), time.monotonic()
        run = run_bounded(cmd, timeout, out_path)
        gw1, mock1, busy1, t1 = system.cpu(), self.up.cpu(), machine_busy_seconds(), time.monotonic()
        threads1 = system.threads_cpu()
        try:
            result = parse(out_path.read_text())
        except Exception as e:
            err = out_path.with_suffix(".err").read_text()[-2000:]
            result = {"error": f"{type(e).__name__}: {e}; exit {run['exit']}; {err}"}
        wall = t1 - t0
        ours = (gw1 - gw0 if gw0 is not None else 0.0) + (mock1 - mock0) + run["cpu_s"]
        result.update({
            "wall_s": wall,
            "gateway_cpu_s": (gw1 - gw0) if gw0 is not None else None,
            # By thread name (threads that ended during the run are missing).
            "gateway_threads_cpu_s": {name: cpu - threads0.get(name, 0.0)
                                      for name, cpu in threads1.items()},
            "mock_cpu_s": mock1 - mock0,
            "loadgen_cpu_s": run["cpu_s"],
            # CPU used by processes that are not part of the run (other builds...), in cores.
            "foreign_cores": max(0.0, (busy1 - busy0) - ours) / wall if wall > 0 else 0.0,
            "loadavg": Path("/proc/loadavg").read_text().split()[0],
        })
        if post:
            post(result)
        n = result.get("ok") or 0
        for who in ("gateway", "mock"):
            cpu = result[f"{who}_cpu_s"]
            result[f"{who}_cpu_s_per_1k"] = cpu / n * 1000 if (cpu is not None and n) else None
        return result

    # --- oha (blocking) ---

    def oha_cmd(self, system: System, kind: str, extra: list[str]) -> list[str]:
        url, headers, body = system.target(kind)
        cmd = [str(self.oha), "--no-tui", "--output-format", "json", "-m", "POST",
               "-T", "application/json", "-d", json.dumps(body)]
        for k, v in headers.items():
            cmd += ["-H", f"{k}: {v}"]
        return pinned(self.args.load_cpus, cmd + extra + [url])

    @staticmethod
    def parse_oha(text: str) -> dict:
        j = json.loads(text)
        s = j["summary"]
        statuses = {str(k): v for k, v in (j.get("statusCodeDistribution") or {}).items()}
        errors = j.get("errorDistribution") or {}
        ok = statuses.get("200", 0)
        pct = {k: v * 1000 for k, v in (j.get("latencyPercentiles") or {}).items()
               if v is not None}
        return {
            "ok": ok,
            "statuses": statuses,
            "errors": errors,
            "rps": s.get("requestsPerSec"),
            "ok_rps": ok / s["total"] if s.get("total") else None,
            "success_rate": s.get("successRate"),
            "latency_ms": pct,
            "mean_ms": (s.get("average") or 0) * 1000,
        }

    def warmup(self, system: System, kind: str) -> None:
        secs = self.prof["warmup_seconds"]
        cmd = self.oha_cmd(system, kind, ["-z", f"{secs}s", "-c", "8"])
        run_bounded(cmd, secs + 30, OUT / "runs" / f"warmup-{system.name}-{kind}.json")

    def fixed_rate(self, system: System, kind: str, rate: int, seconds: int, pre=None,
                   post=None) -> dict:
        cmd = self.oha_cmd(system, kind, ["-z", f"{seconds}s", "-q", str(rate),
                                          "--latency-correction", "-c", str(RATE_CONNS)])
        r = self.measure(system, f"{kind}-{rate}rps", cmd, seconds + 40, self.parse_oha, pre,
                         post)
        r.update({"rate": rate, "seconds": seconds})
        return r

    def saturation(self, system: System, kind: str) -> dict:
        secs, conns = self.prof["saturation_seconds"], self.prof["saturation_conns"]
        cmd = self.oha_cmd(system, kind, ["-z", f"{secs}s", "-c", str(conns)])
        r = self.measure(system, f"{kind}-saturation", cmd, secs + 40, self.parse_oha)
        r.update({"conns": conns, "seconds": secs})
        return r

    # --- aibridge-sse-bench (streams) ---

    def sse_cmd(self, system: System, kind: str, rate: float, n: int, limit: float) -> list[str]:
        url, headers, body = system.target(kind)
        cmd = [str(self.sse), "--url", url, "--body", json.dumps(body), "--rate", str(rate),
               "--requests", str(n), "--max-conns", str(SSE_MAX_CONNS),
               "--time-limit-s", str(limit)]
        for k, v in headers.items():
            cmd += ["--header", f"{k}: {v}"]
        return pinned(self.args.load_cpus, cmd)

    @staticmethod
    def parse_sse(text: str) -> dict:
        j = json.loads(text)
        j["latency_ms"] = j.pop("latency_ms")
        return j

    def streams(self, system: System, kind: str) -> dict:
        rate, secs = self.prof["stream_rate"], self.prof["stream_seconds"]
        n = rate * secs
        cmd = self.sse_cmd(system, kind, rate, n, secs + 30)
        r = self.measure(system, kind, cmd, secs + 60, self.parse_sse)
        r.update({"rate": rate, "seconds": secs})
        return r

    def long_streams(self, system: System) -> dict:
        p = self.prof
        n, ramp = p["long_streams"], p["long_ramp_rate"]
        stream_s = p["long_events"] * p["long_event_delay_ms"] / 1000
        limit = n / ramp + stream_s * 4 + 30
        samples: list[dict] = []
        cmd = self.sse_cmd(system, "long", ramp, n, limit)
        # Sample the gateway's RSS while the streams are open.
        import threading
        stop_evt = threading.Event()

        def sampler():
            while not stop_evt.is_set():
                m = system.memory()
                if m:
                    samples.append(m)
                stop_evt.wait(0.1)

        th = threading.Thread(target=sampler, daemon=True)
        before = system.memory()
        th.start()
        try:
            r = self.measure(system, "long-streams", cmd, limit + 30, self.parse_sse)
        finally:
            stop_evt.set()
            th.join()
        after = system.memory()
        r.update({
            "streams": n, "stream_seconds": stream_s,
            "rss_before_kb": before["rss_kb"] if before else None,
            "rss_peak_sampled_kb": max((s["rss_kb"] for s in samples), default=None),
            "hwm_kb": after["hwm_kb"] if after else None,
        })
        return r


# ------------------------------------------------------------------------------------------------
# The run


def run_system(runner: Runner, system: System, up: Upstreams, deadline: float) -> dict:
    p = runner.prof
    res: dict = {"label": system.label, "version": system.version(), "blocking": {},
                 "saturation": {}, "streams": {}}
    log(f"== {system.label}: starting")
    t0 = time.monotonic()
    system.start(up, runner.args.gateway_cpus)
    res["ready_s"] = getattr(system, "ready_s", 0.0)
    res["start_s"] = time.monotonic() - t0
    res["rss_idle_kb"] = (system.memory() or {}).get("rss_kb")
    try:
        # Long streams first, on a fresh process: its VmHWM is then this scenario's peak.
        log(f"{system.name}: {p['long_streams']} concurrent long streams")
        res["long_streams"] = runner.long_streams(system)
        rates = p["reduced_rates"] if system.reduced else p["rates"]
        for i, kind in enumerate(p["blocking_endpoints"]):
            if i == 0 or p["warmup_every_endpoint"]:
                runner.warmup(system, kind)
            for rate in rates:
                if time.monotonic() > deadline:
                    raise TimeoutError("run time budget exhausted")
                log(f"{system.name}: {kind} blocking at {rate} rps")
                res["blocking"].setdefault(kind, {})[str(rate)] = runner.fixed_rate(
                    system, kind, rate, p["rate_seconds"])
            log(f"{system.name}: {kind} blocking at saturation")
            res["saturation"][kind] = runner.saturation(system, kind)
        for kind in p["stream_endpoints"][:1] if system.reduced else p["stream_endpoints"]:
            log(f"{system.name}: {kind} streams at {p['stream_rate']}/s")
            res["streams"][kind] = runner.streams(system, f"{kind}_stream")
        if not system.reduced:
            log(f"{system.name}: failover at {p['failover_rate']} rps (first key always 429)")
            res["failover"] = runner.fixed_rate(
                system, "failover", p["failover_rate"], p["failover_seconds"],
                pre=up.reset_counts, post=lambda r: r.update(upstream_hits=up.hits()))
    except TimeoutError as e:
        res["aborted"] = str(e)
        log(f"{system.name}: {e}")
    finally:
        res["memory_end"] = system.memory()
        res["cpu_total_s"] = system.cpu()
        t1 = time.monotonic()
        system.stop()
        res["stop_s"] = time.monotonic() - t1
    return res


def run_ab(runner: Runner, direct: System, gateway: System, up: Upstreams) -> dict:
    """Direct and aibridge alternately at the target rate, a few short runs each: the spread of
    the p99 on a shared machine, and an added p99 that does not hang on one run."""
    p = runner.prof
    rate, secs, pairs = 1000, p["ab_seconds"], p["ab_pairs"]
    out: dict = {"rate": rate, "seconds": secs, "pairs": {}}
    log(f"== A/B: direct and aibridge alternately at {rate} rps, {pairs} pairs per endpoint")
    direct.start(up, None)
    gateway.start(up, runner.args.gateway_cpus)
    try:
        for kind in p["blocking_endpoints"]:
            runner.warmup(gateway, kind)
            rows = []
            for i in range(pairs):
                if time.monotonic() > runner.deadline:
                    out["aborted"] = "run time budget exhausted"
                    break
                d = runner.fixed_rate(direct, kind, rate, secs)
                a = runner.fixed_rate(gateway, kind, rate, secs)
                rows.append({"direct": d, "aibridge": a})
            out["pairs"][kind] = rows
    finally:
        gateway.stop()
    return out


def supports_recording(binary: Path) -> bool:
    try:
        return b"AIBRIDGE_RECORDING" in binary.read_bytes()
    except OSError:
        return False


def tool_versions(oha: Path) -> dict:
    def out(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
        except Exception as e:
            return f"? ({e})"
    return {
        "oha": out([str(oha), "--version"]),
        "rustc": out(["rustc", "--version"]),
        "python": platform.python_version(),
        "node": out(["node", "--version"]),
        "kernel": platform.release(),
    }


def machine() -> dict:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return {"nproc": os.cpu_count(), "model": model, "mem_gib": round(int(mem) / 2**20, 1)}


def git_state() -> dict:
    def out(*cmd):
        r = subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True)
        return r.stdout.strip()
    return {"commit": out("rev-parse", "--short", "HEAD"),
            "dirty": bool(out("status", "--porcelain", "--untracked-files=no"))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profile", choices=sorted(PROFILES), default="full")
    ap.add_argument("--aibridge-bin", type=Path, default=ROOT / "target/release/aibridge")
    ap.add_argument("--mock-bin", type=Path, default=ROOT / "target/release/aibridge-mock")
    ap.add_argument("--sse-bin", type=Path, default=ROOT / "target/release/aibridge-sse-bench")
    ap.add_argument("--oha", type=Path, default=TOOLS / "bin/oha")
    ap.add_argument("--nginx-bin", type=Path,
                    default=Path(shutil.which("nginx") or "/usr/sbin/nginx"))
    ap.add_argument("--systems", default="direct,nginx,aibridge,litellm,portkey",
                    help="comma-separated subset of direct,nginx,aibridge,litellm,portkey")
    ap.add_argument("--aibridge-variant", action="append", default=[],
                    metavar="NAME:ENV=VAL,ENV=VAL",
                    help="an extra aibridge system with more environment (e.g. recording on)")
    ap.add_argument("--gateway-cpus", default=None, help="taskset list for the gateway")
    ap.add_argument("--load-cpus", default=None,
                    help="taskset list for the load generator and the fake upstream")
    ap.add_argument("--budget-s", type=float, default=None, help="stop starting new runs after")
    ap.add_argument("--command", default="", help="the command line, for the report")
    ap.add_argument("--aibridge-source", default="",
                    help="what the aibridge binary was built from, for the report")
    ap.add_argument("--skip", action="append", default=[],
                    help="SYSTEM=REASON: a system that could not be installed")
    args = ap.parse_args()
    for attr in ("aibridge_bin", "mock_bin", "sse_bin", "oha"):
        setattr(args, attr, getattr(args, attr).resolve())

    nproc = os.cpu_count() or 1
    if args.gateway_cpus is None and args.load_cpus is None and nproc >= 2:
        # The system under test gets core 0 to itself; the load generator and the fake upstream
        # share core 1 (and any further cores).
        args.gateway_cpus = "0"
        args.load_cpus = "1" if nproc == 2 else f"1-{nproc - 1}"
    prof = PROFILES[args.profile]
    budget = args.budget_s or (170 if args.profile == "quick" else 840)
    if args.budget_s is None and "nginx" in args.systems.split(","):
        # nginx's share on top of the others' (its runs take as long as direct's).
        budget += 30 if args.profile == "quick" else 150
    OUT.mkdir(exist_ok=True)
    (OUT / "runs").mkdir(exist_ok=True)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    started = time.monotonic()
    deadline = started + budget

    skipped = dict(s.split("=", 1) for s in args.skip)
    wanted = [s for s in args.systems.split(",") if s]
    systems: list[System] = []
    for s in wanted:
        if s in skipped:
            continue
        if s == "direct":
            systems.append(Direct())
        elif s == "aibridge":
            # Recording on/off: a binary that knows AIBRIDGE_RECORDING is measured both ways,
            # "aibridge" with recording off (the gateway's own cost, like the others, which
            # record nothing here) and "aibridge-rec" with it on (SQLite in bench/out/).
            # TODO(recording): an older binary has no recording; other configurations to
            # compare go in with --aibridge-variant NAME:ENV=VAL,...
            if supports_recording(args.aibridge_bin):
                systems.append(AIBridge(args.aibridge_bin, {"AIBRIDGE_RECORDING": "off"},
                                        label="aibridge (recording off)"))
                systems.append(AIBridge(args.aibridge_bin, {"AIBRIDGE_RECORDING": "on"},
                                        name="aibridge-rec",
                                        label="aibridge (recording on, SQLite)", reduced=True))
            else:
                systems.append(AIBridge(args.aibridge_bin))
            for v in args.aibridge_variant:
                vname, _, envs = v.partition(":")
                env = dict(e.split("=", 1) for e in envs.split(",") if e)
                systems.append(AIBridge(args.aibridge_bin, env, name=vname, reduced=True))
        elif s == "nginx":
            systems.append(Nginx(args.nginx_bin, prof))
        elif s == "litellm":
            systems.append(LiteLLM(TOOLS / "litellm-venv"))
        elif s == "portkey":
            systems.append(Portkey(TOOLS / "portkey"))
        else:
            ap.error(f"unknown system {s}")

    report = {
        "profile": args.profile,
        "profile_settings": prof,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": args.command,
        "machine": machine(),
        "git": git_state(),
        "aibridge_source": args.aibridge_source,
        "tools": tool_versions(args.oha),
        "pinning": {"gateway": args.gateway_cpus, "load_and_mock": args.load_cpus},
        "skipped": skipped,
        "systems": {},
    }
    try:
        log(f"profile {args.profile}; gateway on CPU {args.gateway_cpus}, load generator and "
            f"fake upstream on CPU {args.load_cpus}")
        up = Upstreams(args.mock_bin, args.load_cpus, prof)
        runner = Runner(args, prof, up, args.oha, args.sse_bin, deadline)
        for i, system in enumerate(systems):
            ab_reserve = 90 if prof["ab_pairs"] else 0
            runner.rerun_until = started + (budget - ab_reserve) * (i + 1) / len(systems) - 20
            try:
                report["systems"][system.name] = run_system(runner, system, up, deadline)
            except Exception as e:  # one system failing must not lose the others
                log(f"{system.name} failed: {e}")
                report["systems"][system.name] = {"label": system.label, "failed": str(e)}
                system.stop()
        if prof["ab_pairs"] and "direct" in wanted and any(
                isinstance(x, AIBridge) and x.name == "aibridge" for x in systems):
            main_aib = next(x for x in systems if isinstance(x, AIBridge) and x.name == "aibridge")
            report["ab"] = run_ab(runner, Direct(),
                                  AIBridge(args.aibridge_bin, main_aib.extra_env), up)
        report["mock_cpu_total_s"] = up.cpu()
    finally:
        stop_all()
    report["elapsed_s"] = time.monotonic() - started
    (OUT / "results.json").write_text(json.dumps(report, indent=2))
    log(f"done in {report['elapsed_s']:.0f}s; results in bench/out/results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
