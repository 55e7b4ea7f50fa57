# medlens - the two quick-start commands are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.medlens-installed
PYTEST_ARGS ?=

.PHONY: demo test lint format bench sysdeps clean

# Create .venv and install the pinned CPU stack on first use; reuse it afterwards.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# on x86-64 Linux onnxruntime-openvino replaces onnxruntime (one module, two wheels)
	@if [ "$$(uname -sm)" = "Linux x86_64" ] && $(BIN)/python -m pip show onnxruntime >/dev/null 2>&1; \
		then $(BIN)/python -m pip uninstall --quiet -y onnxruntime onnxruntime-openvino; fi
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $@

sysdeps:
	@bash scripts/install-sysdeps.sh

demo: $(STAMP)
	$(BIN)/medlens demo

test: $(STAMP) sysdeps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .medlens-cache
