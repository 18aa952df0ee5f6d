#!/usr/bin/env bash
# One command on a CUDA host, from a clean checkout: TTFT and throughput of vidgraph's graphs
# with the native engine and with vLLM under them, side by side. UNTESTED: no GPU was lent
# while it was written (see benchmarks/README.md).
#
#   bash benchmarks/gpu/run.sh                 # tiny model, then REAL_MODEL if it loads
#   REAL_MODEL=/models/LLaVA-NeXT-Video-7B-hf bash benchmarks/gpu/run.sh
#
# Builds .venv (make install) and .venv-vllm (make install-vllm: vllm on CUDA), then for each
# model serves agg and disagg with `engine: native` and `engine: vllm`, runs the load
# generator at concurrency 1 and 8 against each, and prints one table (results land in
# benchmarks/results/gpu/). Budget: under 8 minutes; a graph that is not up in
# STARTUP_S (default 240) is reported and skipped, and once the budget is spent the
# remaining runs are skipped, saying so.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
OUT="benchmarks/results/gpu"
STARTUP_S="${STARTUP_S:-240}"
BUDGET_S="${BUDGET_S:-450}"
REAL_MODEL="${REAL_MODEL:-llava-hf/LLaVA-NeXT-Video-7B-hf}"
START=$SECONDS
mkdir -p "$OUT"

nvidia-smi -L || { echo "no NVIDIA GPU: this script is for CUDA hosts" >&2; exit 1; }
make install >/dev/null || exit 1
make install-vllm || exit 1

run() {  # run LABEL MODEL SERVED_NAME GRAPH CONFIG [overrides...]
    local label=$1 model=$2 name=$3 graph=$4 config=$5
    shift 5
    if (( SECONDS - START > BUDGET_S )); then
        echo "skipped $label: the ${BUDGET_S} s budget is spent"
        return
    fi
    local port=$((18000 + RANDOM % 1000))
    .venv/bin/vidgraph serve "$graph" -f "$config" --Frontend.port=$port \
        --Common.model="$model" --Common.device=cuda --Common.dtype=bfloat16 "$@" \
        >"$OUT/$label.log" 2>&1 &
    local server=$!
    .venv/bin/python -m benchmarks.loadgen --base-url "http://127.0.0.1:$port/v1" --model "$name" \
        --label "$label" --out "$OUT/$label.json" --wait-ready "$STARTUP_S" \
        --concurrency 1,8 --num-requests 24 --max-tokens 64 --repeat-share 0.2 --text-share 0.2 \
        >/dev/null || echo "$label failed: see $OUT/$label.log"
    kill -TERM $server
    wait $server
}

# Two vLLM engines share the one GPU in disagg: give each a part of its memory.
VLLM_ONE=("--Common.vllm-args={gpu-memory-utilization: 0.35}")
for model in tiny "$REAL_MODEL"; do
    tag=$([[ $model == tiny ]] && echo tiny || echo real)
    name=$([[ $model == tiny ]] && echo tiny || echo "$model")
    run "$tag-native-agg" "$model" "$name" graphs.agg configs/agg.yaml
    run "$tag-native-disagg" "$model" "$name" graphs.disagg configs/disagg.yaml
    run "$tag-vllm-agg" "$model" "$name" graphs.agg configs/agg-vllm.yaml "${VLLM_ONE[@]}"
    run "$tag-vllm-disagg" "$model" "$name" graphs.disagg configs/disagg-vllm.yaml "${VLLM_ONE[@]}"
done

.venv/bin/python -m benchmarks.loadgen.compare "$OUT"/*.json --out "$OUT/comparison"
cat "$OUT/comparison.md"
echo "done in $((SECONDS - START)) s"
