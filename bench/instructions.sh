#!/usr/bin/env bash
# Instructions per request of the gateway (valgrind's callgrind): a count that does not depend
# on how fast or how busy the machine is, for comparing two builds where timings are too noisy.
#
#   bench/instructions.sh BIN [BIN...]     (release binaries of aibridge; default target/release)
#
# For each binary and recording off/on: the gateway under callgrind in front of aibridge-mock,
# 200 warm-up requests, counters zeroed, then N (default 2000) blocking Anthropic Messages
# requests (API=openai: OpenAI Chat Completions) from oha with CONC (default 4) connections;
# prints instructions per request (every thread of the gateway, the kernel's part excluded).
# What the writer does per request depends on the request's time against the recorder's 20 ms
# batch window: through the fake upstream, which answers at once, most requests start and end
# within one batch and are one row insert (at CONC=4 under callgrind ~88 % of them; at CONC=64,
# where requests queue, ~40 %). With a real upstream, whose answers take seconds, every start
# is committed in one batch and the request's records and end in a later one, which costs the
# writer more: LATENCY_MS=50 has the fake upstream wait that long before each answer, to
# measure that regime (recording on ~220k-227k instructions per request, against ~179k without
# the wait); scripts/instruction-gate measures it. MCP=1 configures
# an MCP server whose tools are injected into every request (the model never calls them);
# STREAM=1 makes the requests streaming.
# Needs valgrind (and oha, else LOAD=python is used). KEEP=DIR keeps each measured
# dump there for callgrind_annotate. DATABASE_URL=postgres://… records into that database
# instead of a new SQLite file (the database server's own work is not counted). Loopback only;
# every process is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
N=${N:-2000}
OHA=${OHA:-$ROOT/bench/.tools/bin/oha}
MOCK=$ROOT/target/release/aibridge-mock
OUT=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$OUT"
}
trap cleanup EXIT

# The load comes from oha (bench/run.sh installs it) or, with LOAD=python or without oha, from
# bench/load.py (what CI's gate uses: counts differ a little between the two).
LOAD=${LOAD:-oha}
[ -x "$OHA" ] || LOAD=python
command -v valgrind >/dev/null || { echo "valgrind is needed" >&2; exit 1; }
[ -x "$MOCK" ] || cargo build --release -p aibridge-mock >&2
BINS=("$@")
[ ${#BINS[@]} -gt 0 ] || { cargo build --release -p aibridge >&2; BINS=("$ROOT/target/release/aibridge"); }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_http() { # url
  for _ in $(seq 1 600); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "no answer from $1" >&2
  return 1
}

MOCK_PORT=$(free_port)
MCP_PORT=$(free_port)
"$MOCK" --listen "127.0.0.1:$MOCK_PORT" --no-record --latency-ms "${LATENCY_MS:-0}" --mcp-listen "127.0.0.1:$MCP_PORT" > "$OUT/mock.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$MOCK_PORT/_mock/stats"

# STREAM=1: streaming requests (each answer 5 text deltas, read whole by oha).
STREAMING=false
[ -n "${STREAM:-}" ] && STREAMING=true
# API=openai: the same request as a Chat Completion, through the OpenAI provider.
case "${API:-anthropic}" in
  anthropic)
    PROVIDER=ANTHROPIC UPSTREAM=http://127.0.0.1:$MOCK_PORT ROUTE=/anthropic/v1/messages
    BODY='{"model":"claude-sonnet-4-5","max_tokens":64,"stream":'$STREAMING',"messages":[{"role":"user","content":"Say hello"}]}'
    ;;
  openai)
    PROVIDER=OPENAI UPSTREAM=http://127.0.0.1:$MOCK_PORT/v1 ROUTE=/openai/v1/chat/completions
    BODY='{"model":"gpt-4o","stream":'$STREAMING',"messages":[{"role":"user","content":"Say hello"}]}'
    ;;
  *) echo "API is anthropic or openai" >&2; exit 1 ;;
esac
printf '%-60s %-10s %s\n' binary recording instructions/request
# MCP=1: the gateway injects the mock MCP server's tools into every request (never called).
CONFIG=()
if [ -n "${MCP:-}" ]; then
  printf '[[mcp_servers]]\nname = "bench"\nurl = "http://127.0.0.1:%s/mcp"\n' "$MCP_PORT" > "$OUT/mcp.toml"
  CONFIG=(--config "$OUT/mcp.toml")
fi
for bin in "${BINS[@]}"; do
  for recording in off on; do
    port=$(free_port)
    out=$OUT/cg-$recording.out
    env "AIBRIDGE_${PROVIDER}_KEYS=sk-bench-key-0" "AIBRIDGE_${PROVIDER}_BASE_URL=$UPSTREAM" \
      AIBRIDGE_LISTEN=127.0.0.1:$port AIBRIDGE_AUTH=none AIBRIDGE_LOG=warn \
      AIBRIDGE_RECORDING=$recording AIBRIDGE_DATABASE_URL=${DATABASE_URL:-sqlite://$OUT/aibridge-$recording.db} \
      valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" serve "${CONFIG[@]}" > "$OUT/gw.log" 2>&1 &
    gw=$!
    PIDS+=($gw)
    wait_http "http://127.0.0.1:$port/healthz"
    url=http://127.0.0.1:$port$ROUTE
    load() {
      if [ "$LOAD" = python ]; then
        python3 "$ROOT/bench/load.py" "$url" "$1" "${CONC:-4}" "$BODY"
      else
        "$OHA" --no-tui -n "$1" -c "${CONC:-4}" -m POST -H 'anthropic-version: 2023-06-01' \
          -H 'x-api-key: abk_bench' -T application/json -d "$BODY" "$url" > "$OUT/oha.log"
      fi
    }
    load 200
    callgrind_control -z "$gw" > /dev/null 2>&1
    load "$N"
    callgrind_control -d "$gw" > /dev/null 2>&1
    kill "$gw"; wait "$gw" 2>/dev/null || true
    # The dump after the zeroing holds the measured requests (the last file written).
    dump=$(ls -t "$out".* 2>/dev/null | head -1)
    total=$(grep -m1 '^summary:' "$dump" | awk '{print $2}')
    printf '%-60s %-10s %s\n' "$bin" "$recording" "$((total / N))"
    if [ -n "${KEEP:-}" ]; then
      mkdir -p "$KEEP" && cp "$dump" "$KEEP/$(basename "$bin")-$recording.callgrind"
    fi
    rm -f "$out" "$out".*
  done
done
