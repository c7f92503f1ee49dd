# The two set-up commands of README.md: `make quickstart` (install + main job) and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

# torch first, from the CPU wheel; then everything else in one resolve, pinned to that torch.
$(BIN)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[test,bench]'
	touch $@

install: $(BIN)/.installed

quickstart: install
	$(BIN)/genforge run recipes/quickstart.yaml --out runs/quickstart

# The serving tests need PostgreSQL and headless Chromium: apt-installed when missing.
system-deps:
	bash scripts/system-deps.sh

test: install system-deps
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4

lint: install
	$(BIN)/ruff check genforge tests benchmarks

.PHONY: install system-deps quickstart test lint
