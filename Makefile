# emoprune: `make repro` runs the whole pipeline on the bundled sample; `make test` runs the tests.
# Both bootstrap .venv from requirements.txt first.

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
# Stages run `python` and the venv's `dvc`: put the venv first on PATH for every recipe.
export PATH := $(BIN):$(PATH)
export MPLBACKEND := Agg
PORT ?= 5000
E2E ?= default full
HOST ?= 127.0.0.1
# pytest-xdist workers for `make test`; 0 runs the suite in one process.
TEST_JOBS ?= 2

.PHONY: help venv sample data repro weights test lint ui plots bench bench-smoke clean

help:
	@echo "make repro        set up .venv, generate the sample into data/raw if absent, dvc repro"
	@echo "make weights      fetch the ImageNet weights of finetune.archs into models/pretrained"
	@echo "make test         set up .venv, run the test suite"
	@echo "make lint         ruff check + ruff format --check"
	@echo "make ui           MLflow UI on http://$(HOST):$(PORT) (PORT=..., HOST=...)"
	@echo "make plots        dvc plots show -> dvc_plots/index.html, drawn with no network"
	@echo "make bench        measured speed -> reports/bench.md, reports/bench.json"
	@echo "                  (E2E=default skips the hour-long full-size sample)"
	@echo "make bench-smoke  a seconds-long run of the benchmarks, no thresholds"

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

# The folder params.yaml's data.raw names ("data/raw" when it cannot be read: check_params then
# says what is wrong with the file).
RAW_PARAM = $(shell $(PY) -c "import yaml; print(yaml.safe_load(open('params.yaml'))['data']['raw'])" 2>/dev/null || echo data/raw)

# The sample is generated only into data/raw, only when it is absent and data.raw names it: a real
# SFEW copy, there or elsewhere, is never touched.
sample: $(STAMP)
	@if [ "$$(realpath -m '$(RAW_PARAM)')" != "$$(realpath -m data/raw)" ]; then \
		echo "data.raw is $(RAW_PARAM): no sample generated"; \
	elif [ ! -d data/raw ]; then \
		echo "data/raw is absent: generating the SFEW-like sample"; \
		$(PY) -m emoprune.data.sample data/raw; \
	fi

# `dvc commit` puts data/raw into DVC's cache (needed by `dvc exp run --temp/--queue`) and
# records its hash in data.dvc; the sample is byte-for-byte deterministic, so on a fresh clone
# data.dvc stays as committed. With data.raw elsewhere and no data/raw, there is nothing to commit.
data: sample
	@if [ -d data/raw ]; then dvc commit -f -q data.dvc; fi

repro: data
	dvc repro

# The pretrained stage alone, forced: fetches what is missing (online), keeps what is there. The
# next `dvc repro` reruns finetune_resnet on the new files; `dvc push` shares them.
weights: $(STAMP)
	dvc repro --force --single-item pretrained

test: $(STAMP)
	$(PY) -m pytest -n $(TEST_JOBS) --dist loadgroup

LINTED := src stages tests benchmarks
lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

# Checks the port first, points a copied or moved project's store at this folder's mlartifacts,
# prints the link, then serves (`emoprune ui --help`).
ui: $(STAMP)
	@$(BIN)/emoprune ui --host $(HOST) --port $(PORT)

# Vega, Vega-Lite and vega-embed from the npm registry, inlined into a DVC page template; the
# template is set in .dvc/config.local, so a plain `dvc plots show` or `dvc plots diff` after
# this draws offline too.
PLOTS_JS := plots/node_modules/.package-lock.json
$(PLOTS_JS): plots/package.json plots/package-lock.json
	npm ci --prefix plots --no-audit --no-fund --loglevel=error

plots/template.html: $(PLOTS_JS) src/emoprune/plots_page.py $(STAMP)
	$(PY) -m emoprune.plots_page plots/node_modules $@

plots: plots/template.html
	dvc config --local plots.html_template ../plots/template.html
	dvc plots show

# E2E picks the end-to-end samples: `make bench E2E=default` skips the hour-long full-size run.
bench: $(STAMP)
	$(PY) -m benchmarks --e2e $(E2E)

bench-smoke: $(STAMP)
	$(PY) -m benchmarks --smoke

clean:
	rm -rf outputs mlartifacts mlflow.db .pytest_cache dvc_plots
