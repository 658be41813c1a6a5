# fedledger: `make run` (demo consortium + audit) and `make test` (lint, types, tests) work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist
PIP    := $(BIN)/python -m pip --disable-pip-version-check

ANVIL  := node_modules/.bin/anvil

.PHONY: run test lint bench bench-poisoning bench-chain bench-crypto data clean browser

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
	$(PIP) install -q -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -c "import torch, fedledger, web3, vyper, eth"  # fail here if an install failed
	touch $(STAMP)

run: $(STAMP)
	rm -rf runs/demo
	$(BIN)/fedledger demo --out runs/demo
	$(BIN)/fedledger audit runs/demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src

# foundry's anvil and cast (a real Ethereum node for the consortium tests), pinned by package-lock.json
$(ANVIL): package.json package-lock.json
	npm ci --no-audit --no-fund --silent || npm install --no-audit --no-fund --silent
	test -x $(ANVIL)
	touch $(ANVIL)

# Headless Chromium and its driver for the browser tests (Debian's packages; root, like `make data`).
browser:
	test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver)

test: lint $(ANVIL) browser
	$(BIN)/pytest -q

# Fashion-MNIST from Debian, for the benchmarks (tests make their own small IDX files).
data:
	test -d $(FMNIST) || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)

# Every benchmark table in docs/benchmarks.md (about 25 minutes here); Flower goes in the [bench] extra.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PIP) install -q -e ".[bench]" 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -c "import flwr, ray, matplotlib"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) data $(ANVIL)
	$(BIN)/python bench/bench_core.py --json-out bench/results/core.json
	$(BIN)/python bench/bench_flower.py --rounds 20 --systems bare,fedledger_off,fedledger_secured,flower,probe --json-out bench/results/flower.json
	$(BIN)/python bench/bench_scale.py --json-out bench/results/scale.json
	$(BIN)/python bench/plots.py

bench-poisoning: $(STAMP) data
	$(BIN)/python bench/bench_poisoning.py --json-out bench/results/poisoning.json

bench-chain: $(STAMP)
	$(BIN)/python bench/bench_chain.py

bench-crypto: $(STAMP)
	$(BIN)/python bench/bench_crypto.py

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
