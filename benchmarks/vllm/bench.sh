#!/usr/bin/env bash
# Starts vLLM on the tiny checkpoint, runs the load generator against it, stops it.
#
#   bash benchmarks/vllm/bench.sh [loadgen flags...]     # e.g. --concurrency 1,2,4 --num-requests 32
#
# Results go to benchmarks/results/vllm.json (unless --label/--out say otherwise).
# If vLLM is not installed or does not come up, it says "vLLM unavailable: <reason>"
# and exits 1, so a comparison driver can go on without it.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PORT="${VLLM_PORT:-8001}"
STARTUP_S="${VLLM_STARTUP_S:-600}"
WORK="$(mktemp -d)"
SERVER=""

cleanup() {
    if [[ -n "$SERVER" ]] && kill -0 "$SERVER" 2>/dev/null; then
        kill -TERM "$SERVER"
        wait "$SERVER"
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

MODEL="${VLLM_MODEL:-$WORK/tiny}"
if [[ -z "${VLLM_MODEL:-}" ]]; then
    "$ROOT/.venv/bin/vidgraph" make-tiny-model "$MODEL" >/dev/null 2>&1 \
        || { echo "vLLM unavailable: could not build the tiny checkpoint" >&2; exit 1; }
fi

bash "$HERE/serve.sh" "$MODEL" "$PORT" >"$WORK/server.log" 2>&1 &
SERVER=$!
for _ in $(seq "$STARTUP_S"); do
    curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null && break
    if ! kill -0 "$SERVER" 2>/dev/null; then
        echo "vLLM unavailable: the server exited while starting; its last lines:" >&2
        tail -n 15 "$WORK/server.log" >&2
        exit 1
    fi
    sleep 1
done
curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null \
    || { echo "vLLM unavailable: not ready after ${STARTUP_S} s" >&2; exit 1; }

cd "$ROOT" && .venv/bin/python -m benchmarks.loadgen \
    --base-url "http://127.0.0.1:$PORT/v1" --model tiny --label vllm "$@"
