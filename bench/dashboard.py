#!/usr/bin/env python3
"""How long the dashboard's pages take with a large record store.

    bench/dashboard.py [--records 100000] [--binary target/release/aibridge] [--runs 20]

Starts the gateway once to create its SQLite database, stops it, writes N ended interceptions
(each with two attempts, a usage row, a prompt and the totals its end writes; 20 users, 4
models, spread over 30 days) straight into the database in one transaction, starts the gateway again (AIBRIDGE_AUTH=none, loopback
only) and times each page RUNS times from this process (wall clock, the whole response read).
Prints the median and the slowest run per page. Every process is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"aibridge listening on (http://127\.0\.0\.1:\d+)")


def start(binary: Path, workdir: Path) -> tuple[subprocess.Popen, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIBRIDGE_")}
    env.update({
        "AIBRIDGE_LISTEN": "127.0.0.1:0",
        "AIBRIDGE_AUTH": "none",
        "AIBRIDGE_LOG": "warn,aibridge=info",
        "AIBRIDGE_DATABASE_URL": f"sqlite://{workdir / 'aibridge.db'}",
        "AIBRIDGE_ANTHROPIC_KEYS": "sk-bench-key-0,sk-bench-key-1",
        "AIBRIDGE_ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
        "NO_COLOR": "1",
    })
    proc = subprocess.Popen([str(binary), "serve"], env=env, cwd=workdir,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            sys.exit(f"the gateway exited with {proc.returncode}")
        match = READY.search(line)
        if match:
            return proc, match.group(1)
    proc.kill()
    sys.exit("the gateway did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def seed(db: Path, records: int) -> str:
    """Writes `records` interceptions; returns the id of one with two attempts."""
    rng = random.Random(7)
    now = int(time.time() * 1000)
    month = 30 * 24 * 3600 * 1000
    users = [f"user{i:02d}" for i in range(20)]
    models = ["claude-sonnet-4-5", "claude-haiku-4-5", "gpt-5", "gpt-5-mini"]
    conn = sqlite3.connect(db)
    interceptions, attempts, usages, prompts = [], [], [], []
    sample = ""
    for n in range(records):
        rid = str(uuid.UUID(int=rng.getrandbits(128)))
        started = now - rng.randrange(month)
        model = rng.choice(models)
        status = 200 if rng.random() > 0.05 else 429
        tokens_in, tokens_out = rng.randrange(100, 5000), rng.randrange(10, 800)
        interceptions.append((
            rid, rng.choice(users), "bridged", "anthropic", "anthropic", "POST", "/v1/messages",
            model, rng.randrange(2), "claude-code", None, "bench", "pool", started,
            started + 900, 900, status, "completed" if status == 200 else "exhausted",
            "sk-b...y-1", 2, None, tokens_in, tokens_out, 1,
        ))
        attempts.append((rid, 1, "sk-b...y-0", 429, None, "rate_limited", 60000, 12, started))
        attempts.append((rid, 2, "sk-b...y-1", status, None, None, None, 880, started + 20))
        usages.append((rid, None, tokens_in, tokens_out, 0, 0, "{}", started + 900, 1))
        prompts.append((rid, None, f"Prompt number {n}: explain the failover of key pools.",
                        started, 2))
        if n == records // 2:
            sample = rid
    conn.executemany("INSERT INTO interceptions (id, user_name, kind, provider_type, provider_name, method, route, model, streaming, client, session_id, user_agent, credential, started_at, ended_at, duration_ms, status, outcome, key_hint, attempt_count, error, input_tokens, output_tokens, failovers) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", interceptions)
    conn.executemany("INSERT INTO attempts (interception_id, number, key_hint, status, transport_error, failover_reason, cooldown_ms, duration_ms, created_at) VALUES (?,?,?,?,?,?,?,?,?)", attempts)
    conn.executemany("INSERT INTO token_usages (interception_id, provider_response_id, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, extra, created_at, seq) VALUES (?,?,?,?,?,?,?,?,?)", usages)
    conn.executemany("INSERT INTO prompts (interception_id, provider_response_id, prompt, created_at, seq) VALUES (?,?,?,?,?)", prompts)
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()
    return sample


def timed(url: str) -> tuple[float, int, int]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as response:
        body = response.read()
        status = response.status
    return (time.perf_counter() - started) * 1000, status, len(body)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--binary", type=Path, default=ROOT / "target" / "release" / "aibridge")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        proc, _ = start(args.binary, workdir)
        stop(proc)
        began = time.monotonic()
        sample = seed(workdir / "aibridge.db", args.records)
        print(f"seeded {args.records} records in {time.monotonic() - began:.1f} s")
        proc, url = start(args.binary, workdir)
        try:
            pages = [
                "/ui/keys", "/ui/usage?since=7d&by=user", "/ui/usage?since=30d&by=user",
                "/ui/usage?since=30d&by=model",
                "/ui/usage?since=30d&by=day", "/ui/usage.csv?since=30d&by=user",
                "/ui/requests", "/ui/requests?user=user07", "/ui/requests?status=429&since=30d",
                "/ui/requests?outcome=exhausted", f"/ui/requests/{sample}", "/ui/health",
            ]
            print(f"{'page':45} {'median ms':>10} {'max ms':>8} {'status':>6} {'bytes':>8}")
            for page in pages:
                timed(url + page)  # warm
                runs = [timed(url + page) for _ in range(args.runs)]
                times = [t for t, _, _ in runs]
                print(f"{page:45} {statistics.median(times):10.1f} {max(times):8.1f} "
                      f"{runs[0][1]:6d} {runs[0][2]:8d}")
        finally:
            stop(proc)


if __name__ == "__main__":
    main()
