#!/usr/bin/env bash
# The aibridge benchmark, one command: installs the load generator and the gateways compared
# (into bench/.tools/, once; nginx from Debian's nginx-light), builds the release binaries, then
# runs every scenario directly against the fake upstream, through nginx (a plain reverse proxy,
# the anchor), through aibridge, through LiteLLM proxy and through the Portkey gateway, and
# writes bench/out/RESULTS.md, bench/out/results.json and bench/out/latency.png.
#
#   bench/run.sh            full run (about 15 minutes once the tools are installed)
#   bench/run.sh --quick    quick run (about 3 minutes once the tools are installed)
#
# Options:
#   --quick                 the quick profile
#   --systems LIST          subset of direct,nginx,aibridge,litellm,portkey (default: all)
#   --aibridge-rev REV      benchmark the gateway as committed at REV (e.g. HEAD) instead of the
#                           working tree: exported to bench/.tools/src-REV and built there
#   --aibridge-bin PATH     use this aibridge binary, build none
#   --aibridge-variant NAME:ENV=VAL,...   an extra aibridge system with more environment
#                           (measured on the reduced scenario set)
#   --publish               also copy the report and the plot to bench/RESULTS.md and
#                           bench/results/latency.png (the committed copies)
#
# Every process it starts is stopped when it exits, on Ctrl-C too; all traffic is on 127.0.0.1.
# Not called by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BENCH=$ROOT/bench
TOOLS=$BENCH/.tools
OUT=$BENCH/out
mkdir -p "$TOOLS" "$OUT"

PROFILE=full
SYSTEMS=direct,nginx,aibridge,litellm,portkey
AIBRIDGE_REV=
AIBRIDGE_BIN=
PUBLISH=0
VARIANTS=()
COMMAND="bench/run.sh $*"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) PROFILE=quick ;;
    --systems) SYSTEMS=$2; shift ;;
    --aibridge-rev) AIBRIDGE_REV=$2; shift ;;
    --aibridge-bin) AIBRIDGE_BIN=$2; shift ;;
    --aibridge-variant) VARIANTS+=(--aibridge-variant "$2"); shift ;;
    --publish) PUBLISH=1 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
# Recording on/off: when the aibridge binary knows AIBRIDGE_RECORDING, bench.py measures it
# twice, `aibridge` (AIBRIDGE_RECORDING=off) and `aibridge-rec` (on, SQLite in bench/out/);
# an older binary is measured once and the report says recording was not measured.
# TODO(recording): further recording settings (PostgreSQL, body capture...) go in with
#   bench/run.sh --aibridge-variant 'NAME:AIBRIDGE_DATABASE_URL=postgres://...,...'


BENCH_PID=
cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  if [ -n "$BENCH_PID" ] && kill -0 "$BENCH_PID" 2>/dev/null; then
    kill -TERM "$BENCH_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$BENCH_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$BENCH_PID" 2>/dev/null || true
  fi
  # Whatever bench.py started and could not stop (each in its own process group).
  if [ -f "$OUT/pids" ]; then
    while read -r pid; do
      [ -n "$pid" ] && kill -KILL -- "-$pid" 2>/dev/null || true
    done < "$OUT/pids"
    rm -f "$OUT/pids"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

log() { printf '[run.sh %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
SKIP=()

# --- tools (installed once) -------------------------------------------------------------------
if [ ! -x "$TOOLS/bin/oha" ]; then
  log "installing oha (cargo install oha --locked --root bench/.tools)"
  cargo install oha --locked --root "$TOOLS" > "$OUT/oha-install.log" 2>&1 \
    || { log "oha failed to build: see bench/out/oha-install.log"; exit 1; }
fi

if [ ! -x "$TOOLS/venv/bin/python" ] || ! "$TOOLS/venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
  log "creating the bench venv (matplotlib) in bench/.tools/venv"
  python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/pip" install -q matplotlib > "$OUT/venv-install.log" 2>&1 \
    || log "matplotlib did not install: no plot (see bench/out/venv-install.log)"
fi

if [[ ",$SYSTEMS," == *",litellm,"* ]] && [ ! -x "$TOOLS/litellm-venv/bin/litellm" ]; then
  log "installing LiteLLM proxy into bench/.tools/litellm-venv"
  if ! { python3 -m venv "$TOOLS/litellm-venv" \
      && "$TOOLS/litellm-venv/bin/pip" install -q 'litellm[proxy]'; } > "$OUT/litellm-install.log" 2>&1; then
    SKIP+=(--skip "litellm=pip install 'litellm[proxy]' failed (bench/out/litellm-install.log)")
  fi
fi

# nginx: Debian's nginx-light (as root; the package's own service is not left running).
NGINX_BIN=$(PATH="$PATH:/usr/sbin:/sbin" command -v nginx || true)
if [[ ",$SYSTEMS," == *",nginx,"* ]] && [ -z "$NGINX_BIN" ]; then
  log "installing nginx (apt-get install nginx-light)"
  NGINX_BEFORE=$(pgrep -x nginx || true)
  if { DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light \
      || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light; }; \
      } > "$OUT/nginx-install.log" 2>&1; then
    NGINX_BIN=$(PATH="$PATH:/usr/sbin:/sbin" command -v nginx || true)
    # Where the package could start its service (no policy-rc.d), stop the one it started.
    if [ -z "$NGINX_BEFORE" ] && [ -n "$NGINX_BIN" ] && pgrep -x nginx > /dev/null; then
      log "stopping the nginx service the package started"
      "$NGINX_BIN" -s quit >> "$OUT/nginx-install.log" 2>&1 || true
    fi
  fi
  if [ -z "$NGINX_BIN" ]; then
    SKIP+=(--skip "nginx=apt-get install nginx-light failed (bench/out/nginx-install.log)")
  fi
fi

PORTKEY_JS=$TOOLS/portkey/node_modules/@portkey-ai/gateway/build/start-server.js
if [[ ",$SYSTEMS," == *",portkey,"* ]] && [ ! -f "$PORTKEY_JS" ]; then
  log "installing the Portkey gateway into bench/.tools/portkey"
  mkdir -p "$TOOLS/portkey"
  # @hono/node-server is held at 1.13.8: with later versions the gateway answers every streaming
  # request with 500 "Something went wrong" (TypeError: immutable, Portkey-AI/gateway#1389:
  # it appends headers to the upstream fetch response's immutable Headers).
  cat > "$TOOLS/portkey/package.json" <<'EOF'
{
  "name": "aibridge-bench-portkey",
  "private": true,
  "dependencies": { "@portkey-ai/gateway": "1.15.2" },
  "overrides": { "@hono/node-server": "1.13.8" }
}
EOF
  if ! (cd "$TOOLS/portkey" && npm install --no-audit --no-fund) > "$OUT/portkey-install.log" 2>&1; then
    SKIP+=(--skip "portkey=npm install @portkey-ai/gateway failed (bench/out/portkey-install.log)")
  fi
fi

# --- binaries -----------------------------------------------------------------------------------
SOURCE=
if [ -n "$AIBRIDGE_BIN" ]; then
  SOURCE="binary \`$AIBRIDGE_BIN\` (given with --aibridge-bin)"
  log "building aibridge-mock (release); aibridge from $AIBRIDGE_BIN"
  cargo build --release -p aibridge-mock
elif [ -n "$AIBRIDGE_REV" ]; then
  SHA=$(git rev-parse --short "$AIBRIDGE_REV")
  SRC=$TOOLS/src-$SHA
  if [ ! -x "$TOOLS/aibridge-$SHA" ]; then
    log "building aibridge as committed at $SHA (in bench/.tools/src-$SHA)"
    rm -rf "$SRC" && mkdir -p "$SRC"
    git archive "$SHA" | tar -x -C "$SRC"
    # git archive dates every file at its commit: an artifact of another revision built later in
    # the same target directory would look fresh (a build of db582f1 after f7fa81c linked
    # f7fa81c's protocol crate). Files dated now are newer than any artifact.
    find "$SRC" -type f -exec touch {} +
    # A target directory of its own: sharing the repo's let the older crates' artifacts look
    # fresh to the next working-tree build (same package names, newer files).
    (cd "$SRC" && CARGO_TARGET_DIR="$ROOT/target/bench-rev" cargo build --release -p aibridge)
    cp "$ROOT/target/bench-rev/release/aibridge" "$TOOLS/aibridge-$SHA"
  fi
  AIBRIDGE_BIN=$TOOLS/aibridge-$SHA
  SOURCE="as committed at \`$SHA\` (\`--aibridge-rev $AIBRIDGE_REV\`)"
  log "building aibridge-mock (release, working tree)"
  cargo build --release -p aibridge-mock
else
  log "cargo build --release -p aibridge -p aibridge-mock"
  cargo build --release -p aibridge -p aibridge-mock
  AIBRIDGE_BIN=$ROOT/target/release/aibridge
fi

# Room for 1,000 concurrent streams (two sockets each in a gateway) and their clients.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# --- the run ------------------------------------------------------------------------------------
log "running the $PROFILE profile"
START=$(date +%s)
python3 "$BENCH/bench.py" --profile "$PROFILE" --systems "$SYSTEMS" \
  --aibridge-bin "$AIBRIDGE_BIN" --aibridge-source "$SOURCE" --command "$COMMAND" \
  ${NGINX_BIN:+--nginx-bin "$NGINX_BIN"} \
  ${SKIP[@]+"${SKIP[@]}"} ${VARIANTS[@]+"${VARIANTS[@]}"} &
BENCH_PID=$!
wait "$BENCH_PID"
BENCH_PID=
log "measurements took $(( $(date +%s) - START ))s"

python3 "$BENCH/report.py" "$OUT/results.json" "$OUT/RESULTS.md" --plot latency.png
if [ -x "$TOOLS/venv/bin/python" ]; then
  "$TOOLS/venv/bin/python" "$BENCH/plot.py" "$OUT/results.json" "$OUT/latency.png" \
    || log "plot failed"
fi
if [ "$PUBLISH" = 1 ]; then
  mkdir -p "$BENCH/results"
  python3 "$BENCH/report.py" "$OUT/results.json" "$BENCH/RESULTS.md" --plot results/latency.png
  cp "$OUT/results.json" "$BENCH/results/results.json"
  [ -f "$OUT/latency.png" ] && cp "$OUT/latency.png" "$BENCH/results/latency.png"
  log "published bench/RESULTS.md and bench/results/"
fi
log "report: bench/out/RESULTS.md"
