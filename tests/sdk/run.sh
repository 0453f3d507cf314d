#!/usr/bin/env bash
# End-to-end tests: the official Anthropic and OpenAI Python SDKs through the real
# aibridge binary against aibridge-mock, once with the current SDK majors and once with the
# legacy ones.
#
# This script builds nothing. Build the binaries first:
#     cargo build -p aibridge -p aibridge-mock
# The tests use target/debug/{aibridge,aibridge-mock} under the repo root, or the paths in
# AIBRIDGE_BIN / AIBRIDGE_MOCK_BIN.
#
# Venvs: tests/sdk/.venv-current and tests/sdk/.venv-legacy, created when missing (or under
# $AIBRIDGE_SDK_VENVS_DIR when set). Extra arguments are passed to pytest (e.g. -k failover).
# Exits non-zero if either run fails or collects no test.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venvs_dir="${AIBRIDGE_SDK_VENVS_DIR:-$here}"
python="${PYTHON:-python3}"
export PYTHONDONTWRITEBYTECODE=1

die() { echo "tests/sdk/run.sh: $*" >&2; exit 1; }

setup_venv() { # line -> prints the venv's python
    local line="$1" venv="$venvs_dir/.venv-$1" req="$here/requirements-$1.txt"
    local stamp="$venv/.requirements.sha256" want
    want="$(sha256sum "$req" | cut -d' ' -f1)"
    if [[ ! -x "$venv/bin/python" ]]; then
        mkdir -p "$venvs_dir" || die "cannot create $venvs_dir"
        "$python" -m venv "$venv" >&2 || die "python -m venv $venv failed"
    fi
    if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
        echo "== installing $req into $venv" >&2
        "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req" >&2 \
            || die "pip install -r $req failed"
        echo "$want" > "$stamp"
    fi
    echo "$venv/bin/python"
}

status=0
summary=()
for line in current legacy; do
    py="$(setup_venv "$line")" || exit 1
    versions="$("$py" -c 'import anthropic, openai; print(f"anthropic {anthropic.__version__}, openai {openai.__version__}")')" \
        || die "cannot import the SDKs in the $line venv"
    echo "== SDK line '$line': $versions"
    SDK_LINE="$line" "$py" -m pytest "$here" "$@"
    rc=$?
    case $rc in
        0) summary+=("$line ($versions): passed") ;;
        5) summary+=("$line ($versions): NO TESTS COLLECTED"); status=1 ;;
        *) summary+=("$line ($versions): FAILED (pytest exit $rc)"); status=1 ;;
    esac
done

echo "== summary"
printf '   %s\n' "${summary[@]}"
exit $status
