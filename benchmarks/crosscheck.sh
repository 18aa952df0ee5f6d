#!/usr/bin/env bash
# Cross-checks the load generator against an independent tool, aiperf (from PyPI),
# on one endpoint, one load point and the same workload mix.
#
#   bash benchmarks/crosscheck.sh BASE_URL TOKENIZER_DIR [CONCURRENCY] [NUM_REQUESTS] [mix flags...]
#   e.g. bash benchmarks/crosscheck.sh http://127.0.0.1:8001/v1 /tmp/tiny 4 32 --text-share 0.5
#
# aiperf lives in its own venv, benchmarks/.venv-aiperf (installed on first use).
# Our generator runs first (its warm-up warms the server for both); aiperf then
# sends the same kinds, prompts and video lengths with fresh videos of its own, so
# it never hits a cache our run filled. Writes benchmarks/results/crosscheck.md,
# crosscheck_loadgen.json and crosscheck_aiperf.json; exits 1 with
# "aiperf unavailable: <reason>" if aiperf cannot be installed or run.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE_URL="${1:?usage: crosscheck.sh BASE_URL TOKENIZER_DIR [CONCURRENCY] [NUM_REQUESTS] [mix flags...]}"
TOKENIZER="${2:?TOKENIZER_DIR: the model directory, whose tokenizer aiperf loads}"
CONCURRENCY="${3:-4}"
NUM_REQUESTS="${4:-32}"
shift $(($# < 4 ? $# : 4))
MIX=("$@")
VENV="$ROOT/benchmarks/.venv-aiperf"
RESULTS="$ROOT/benchmarks/results"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

unavailable() {
    echo "aiperf unavailable: $*" >&2
    exit 1
}

if [[ ! -x "$VENV/bin/aiperf" ]]; then
    "${PYTHON:-python3.11}" -m venv "$VENV" && "$VENV/bin/pip" install -q aiperf==0.13.0 \
        || unavailable "pip could not install aiperf==0.13.0 into $VENV"
fi

# The server's own view of each run, where it has a Prometheus page (vLLM does).
scrape() { curl -sf "${BASE_URL%/v1}/metrics" >"$WORK/metrics/$1.txt" || true; }
mkdir -p "$WORK/metrics"

cd "$ROOT" || exit 1
scrape loadgen_before
.venv/bin/python -m benchmarks.loadgen --base-url "$BASE_URL" --model tiny --label loadgen \
    --concurrency "$CONCURRENCY" --num-requests "$NUM_REQUESTS" "${MIX[@]}" \
    --out "$RESULTS/crosscheck_loadgen.json" || exit 1
scrape loadgen_after
.venv/bin/python -m benchmarks.loadgen.export_aiperf --num-requests "$NUM_REQUESTS" "${MIX[@]}" \
    --out "$WORK/dataset.jsonl" || exit 1

# The dataset carries our sampling fields (max/min_tokens, ignore_eos, temperature) per request.
# aiperf's URL is the server root: it appends /v1/chat/completions itself. Its offline mode
# cannot load a tokenizer from a local path (0.13.0), so HF_HUB_OFFLINE must stay unset.
scrape aiperf_before
env -u HF_HUB_OFFLINE "$VENV/bin/aiperf" profile \
    --model tiny --url "${BASE_URL%/v1}" --endpoint-type chat --streaming \
    --tokenizer "$TOKENIZER" --use-server-token-count \
    --input-file "$WORK/dataset.jsonl" --custom-dataset-type single_turn \
    --dataset-sampling-strategy sequential \
    --concurrency "$CONCURRENCY" --request-count "$NUM_REQUESTS" \
    --workers-max 1 --record-processors 1 \
    --artifact-dir "$WORK/aiperf" --ui-type none >"$WORK/aiperf.log" 2>&1 \
    || { tail -n 20 "$WORK/aiperf.log" >&2; unavailable "aiperf profile failed (log above)"; }
scrape aiperf_after
cp "$WORK/aiperf/profile_export_aiperf.json" "$RESULTS/crosscheck_aiperf.json"

.venv/bin/python -m benchmarks.loadgen.crosscheck "$RESULTS/crosscheck_loadgen.json" \
    "$RESULTS/crosscheck_aiperf.json" --server-metrics "$WORK/metrics" --out "$RESULTS/crosscheck.md"
