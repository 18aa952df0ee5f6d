#!/usr/bin/env bash
# Serves a LLaVA-NeXT-Video checkpoint with vLLM on CPU, on 127.0.0.1, in the foreground.
#
#   bash benchmarks/vllm/serve.sh MODEL_DIR [PORT] [extra vLLM flags...]
#
# The flags are the ones vLLM 0.32 on CPU needs for a float32 checkpoint, set to
# match our graph's configs/agg.yaml so both serve the same thing:
#   --dtype float32                  the tiny checkpoint's dtype (CPU would pick bf16)
#   --max-model-len 4096             as `max-model-len` in our configs
#   --media-io-kwargs num_frames=8   sample 8 frames per video as our encode workers do
#                                    (without it vLLM feeds every frame of the video)
#   VLLM_CPU_KVCACHE_SPACE=1         GiB of KV cache; 1 GiB holds ~1M tiny-model tokens
# The model is served under the name in SERVED_MODEL_NAME (default "tiny").
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${VLLM_VENV:-$HERE/../../.venv-vllm}"
MODEL="${1:?usage: serve.sh MODEL_DIR [PORT] [extra vLLM flags...]}"
PORT="${2:-8001}"
shift $(($# < 2 ? $# : 2))

[[ -x "$VENV/bin/python" ]] || { echo "vLLM unavailable: run bash benchmarks/vllm/install.sh" >&2; exit 1; }
CONVERTED="$VENV/models/$(basename "$MODEL")"
"$VENV/bin/python" "$HERE/convert_checkpoint.py" "$MODEL" "$CONVERTED" >/dev/null

export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"
exec "$VENV/bin/python" -m vllm.entrypoints.openai.api_server \
    --model "$CONVERTED" --served-model-name "${SERVED_MODEL_NAME:-tiny}" \
    --host 127.0.0.1 --port "$PORT" \
    --dtype float32 --max-model-len 4096 \
    --media-io-kwargs '{"video": {"num_frames": 8}}' \
    "$@"
