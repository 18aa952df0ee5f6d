# Two commands on a fresh machine: `make serve` and `make test`.
# Both install into .venv on first use.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install serve demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q --no-deps nixl-cu13==1.5.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

serve: install
	$(VENV)/bin/vidgraph serve graphs.agg -f configs/agg.yaml

demo: install
	$(PY) examples/demo.py

test: install
	$(PY) -m pytest -q

# Every system side by side, interleaved, on the same cores (benchmarks/README.md).
# Add vLLM first with `bash benchmarks/vllm/install.sh`; e.g. BENCH_ARGS='--concurrency 1,16'.
bench: install
	$(PY) -m pip install -q -e '.[dev,bench]'
	$(PY) -m benchmarks.compare $(BENCH_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV)
