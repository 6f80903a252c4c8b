# Every target sets up its own virtual environment first (.venv), so each works on a fresh clone.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of PyTorch; override for CUDA machines, e.g. make TORCH_SPEC="torch>=2.4" test
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed-dev
PYTEST_ARGS ?=

.PHONY: demo test test-fast lint format bench reproduce clean-venv

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

## Reconstruct sample images with the built-in default model, offline; results in runs/demo/.
demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/titok demo --output runs/demo

## Run the whole test suite (the `slow` end-to-end tests included; two processes, a module per process; about 3 minutes on two CPU cores).
test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadscope $(PYTEST_ARGS)

## The suite without the tests marked `slow` (learning curve, browser); `pytest -m slow` runs only those.
test-fast: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadscope -m "not slow" $(PYTEST_ARGS)

## The whole pipeline on Imagenette at 64 px (BUDGET=quick|default); report in runs/imagenette64-$(BUDGET)/.
BUDGET ?= default
reproduce: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/titok reproduce imagenette64 --budget $(BUDGET) -o runs/imagenette64-$(BUDGET)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

## Speed benchmarks (not tests): results under benchmarks/results/.
bench: $(STAMP)
	$(PY) benchmarks/bench_tokenizer.py

clean-venv:
	rm -rf $(VENV)
