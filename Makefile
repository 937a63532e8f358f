# Quick start: `make demo` (main job) and `make test` (tests + ruff + mypy). Both bootstrap .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_OUT ?= demo-output

.PHONY: demo test test-slow bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install only when the dependency declarations change (idempotent).
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

# Synthetic cohort -> key (made once) -> ingest into a scan store on the embedded Dask cluster.
demo: $(STAMP)
	$(BIN)/screening synth --out $(DEMO_OUT)/cohort --n 24 --seed 7 --size small --overwrite
	test -f $(DEMO_OUT)/demo.key || $(BIN)/screening keygen $(DEMO_OUT)/demo.key
	$(BIN)/screening ingest --store $(DEMO_OUT)/store --manifest $(DEMO_OUT)/cohort/manifest.csv \
		--key-file $(DEMO_OUT)/demo.key

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -m "not slow"
	$(BIN)/ruff check screening tests bench
	$(BIN)/ruff format --check screening tests bench
	$(BIN)/mypy

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check screening tests bench
	$(BIN)/ruff format --check screening tests bench
	$(BIN)/mypy

clean:
	rm -rf $(DEMO_OUT) bench/out .pytest_cache .mypy_cache .ruff_cache
