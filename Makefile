# Quick start: `make demo` (main job) and `make test` (tests + ruff + mypy). Both bootstrap .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_OUT ?= demo-output

.PHONY: demo test test-slow bench bench-setup lint clean demo-weights gpu-wheels

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install only when the dependency declarations change (idempotent).
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

# The main job, end to end on the embedded Dask cluster: a synthetic cohort over four sites
# (steatosis, contrast-enhanced scans, livers cut off by the field of view, one corrupt DICOM
# series) -> key (made once) -> ingest into a scan store -> run (preprocess -> U-Net with the
# shipped demo weights -> measure) streaming into demo-output/results -> summary with
# prevalence by site -> statistics against the cohort's simulated expert reads -> an HTML
# report. Re-running `make demo` resumes: nothing is recomputed.
demo: $(STAMP)
	$(BIN)/screening synth --out $(DEMO_OUT)/cohort --n 36 --seed 7 --size small --corrupt 1 \
		--repeat-fraction 0.15 --overwrite --quiet
	test -f $(DEMO_OUT)/demo.key || $(BIN)/screening keygen $(DEMO_OUT)/demo.key
	$(BIN)/screening ingest --store $(DEMO_OUT)/store --manifest $(DEMO_OUT)/cohort/manifest.csv \
		--key-file $(DEMO_OUT)/demo.key --quiet
	$(BIN)/screening run $(DEMO_OUT)/store --out $(DEMO_OUT)/results --model demo
	$(BIN)/screening stats $(DEMO_OUT)/results --out $(DEMO_OUT)/stats \
		--reference $(DEMO_OUT)/cohort/reads.csv
	$(BIN)/screening report $(DEMO_OUT)/results --stats $(DEMO_OUT)/stats \
		--out $(DEMO_OUT)/report.html

# How the shipped demo weights (screening/model/weights/demo) were made: a synthetic cohort
# (seed 1001, not the demo's seed 7 nor the benchmark's held-out seed 2024), ingested like user
# data, then `screening train` twice: the cascade's coarse model and the fine model. ~25 min on
# 2 CPU cores. The commands land in each model card.
WEIGHTS_WORK ?= build/demo-weights
DEMO_WEIGHTS := screening/model/weights/demo
DEMO_NOTE := Trained on synthetic phantoms only (screening synth); NOT for real CT. Reproduce with make demo-weights.
demo-weights: $(STAMP)
	$(BIN)/screening synth --out $(WEIGHTS_WORK)/cohort --n 80 --seed 1001 --prevalence 0.4 \
		--quiet --overwrite
	test -f $(WEIGHTS_WORK)/train.key || $(BIN)/screening keygen $(WEIGHTS_WORK)/train.key
	$(BIN)/screening ingest --store $(WEIGHTS_WORK)/store --quiet \
		--manifest $(WEIGHTS_WORK)/cohort/manifest.csv --key-file $(WEIGHTS_WORK)/train.key
	$(BIN)/screening train --data $(WEIGHTS_WORK)/store --out $(WEIGHTS_WORK)/coarse --quiet \
		--spacing-mm 10,6,6 --channels 8,16,32,64 --res-units 1 --patch 16,48,48 \
		--batch-size 4 --epochs 20 --iters-per-epoch 30 --notes "$(DEMO_NOTE)"
	$(BIN)/screening train --data $(WEIGHTS_WORK)/store --out $(WEIGHTS_WORK)/fine --quiet \
		--spacing-mm 4,2.5,2.5 --patch 32,96,96 --epochs 40 --iters-per-epoch 50 \
		--notes "$(DEMO_NOTE)"
	mkdir -p $(DEMO_WEIGHTS)/coarse
	cp $(WEIGHTS_WORK)/fine/weights.pt $(WEIGHTS_WORK)/fine/model_card.json $(DEMO_WEIGHTS)/
	cp $(WEIGHTS_WORK)/coarse/weights.pt $(WEIGHTS_WORK)/coarse/model_card.json \
		$(DEMO_WEIGHTS)/coarse/

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -m "not slow"
	$(BIN)/ruff check screening tests bench
	$(BIN)/ruff format --check screening tests bench
	$(BIN)/mypy

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

# The peer tool the ingest benchmark runs beside ours (Debian package; skipped with a message
# when it cannot be installed: no root, no apt).
bench-setup:
	@command -v dcm2niix >/dev/null || apt-get install -y -q dcm2niix >/dev/null 2>&1 \
		|| echo "bench-setup: dcm2niix not installed (apt-get install dcm2niix); the ingest side-by-side runs without it"

bench: $(STAMP) bench-setup
	$(BIN)/python -m bench

# The GPU checks (bench/gpu.sh) run on a lent GPU machine whose python3 (3.12, CUDA torch)
# lacks some of our packages and cannot reach PyPI: fetch them here as wheels into .whl/, with a
# copy of the real CT fixtures the checks use in .gpudata/ (both git-ignored, carried by the call).
GPU_WHEELS := dask distributed donfig locket partd tblib zict tornado zarr numcodecs monai \
	pydicom pylibjpeg pylibjpeg-openjpeg pylibjpeg-libjpeg pylibjpeg-rle nibabel mrcfile pytz
gpu-wheels: $(STAMP)
	rm -rf .whl && mkdir -p .whl .gpudata/real
	for p in $(GPU_WHEELS); do \
		v=$$(grep -i "^$$p==" constraints.txt | cut -d= -f3); \
		$(BIN)/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
			--implementation cp --platform manylinux_2_28_x86_64 \
			--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
			--platform manylinux_2_24_x86_64 --platform manylinux_2_31_x86_64 \
			--platform manylinux_2_34_x86_64 --platform manylinux_2_35_x86_64 \
			-d .whl "$$p==$$v" || exit 1; \
	done
	cp -r ../shared/data/real/totalsegmentator-example ../shared/data/real/lits-117 .gpudata/real/
	du -sh .whl .gpudata

lint: $(STAMP)
	$(BIN)/ruff check screening tests bench
	$(BIN)/ruff format --check screening tests bench
	$(BIN)/mypy

clean:
	rm -rf $(DEMO_OUT) bench/out .pytest_cache .mypy_cache .ruff_cache
