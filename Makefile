# feedlab: two commands set everything up on a fresh clone (Python 3.11 and make are enough).
#   make lab    install into .venv from uv.lock, build data/feedlab.duckdb and train its models if
#               missing, open JupyterLab
#   make test   install the same way and run every test (unit tests, then notebooks under nbval);
#               installs Debian's chromium for the browser test when it is missing
#   make strip  strip outputs, execution counts and widget state from notebooks/*.ipynb in place

PYTHON ?= $(shell command -v python3.11 || command -v python3)
UV_VERSION := 0.13.9
# Use uv from PATH when there is one; otherwise bootstrap a pinned uv into .tools (git-ignored).
UV ?= $(shell command -v uv || echo .tools/bin/uv)
VENV := .venv
DB ?= data/feedlab.duckdb
# The default models, one folder per surface beside the store; this file marks them all trained.
MODELS := $(basename $(DB)).models/.trained
# eta 0.15 instead of the toolkit's 0.05: about 3x fewer rounds, Explore's test AUCs within 0.008
# (docs/predictors.md). bench_predict trains with the toolkit's own settings.
TRAIN_ARGS ?= --learning-rate 0.15 --quiet
LAB_ARGS ?=
# tests/test_browser.py drives this Chromium with Playwright; a downloaded browser is never used.
CHROMIUM ?= /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
# XGBoost's OpenMP threads spin-wait by default, which slows a shared 2-core machine 4-6x.
export OMP_WAIT_POLICY := PASSIVE

.PHONY: lab test data install bench clean strip

lab: install $(MODELS)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# The notebooks and the browser test run on the default store and its models.
test: install $(CHROMIUM) $(MODELS)
	FEEDLAB_CHROMIUM=$(CHROMIUM) $(VENV)/bin/python -m pytest
	@if ls notebooks/*.ipynb >/dev/null 2>&1; then \
		$(VENV)/bin/python -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider notebooks; \
	fi

data: install $(MODELS)

# Only when the file is missing: Debian's package, with sudo when not root.
$(CHROMIUM):
	@command -v apt-get >/dev/null 2>&1 || { echo "make test: no Chromium at $@ and no apt-get to install it; install Chromium and run make test CHROMIUM=/path/to/chromium" >&2; exit 1; }
	@echo "make test: installing Debian's chromium for the browser test (tests/test_browser.py)"
	@{ $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; } || { echo "make test: could not install chromium with apt-get (run as root or with sudo rights, or install Chromium and run make test CHROMIUM=/path/to/chromium)" >&2; exit 1; }
	@test -x $@ || { echo "make test: chromium was installed but $@ is still missing; run make test CHROMIUM=/path/to/chromium" >&2; exit 1; }

# Notebooks are stored stripped; tests/test_notebooks_clean.py checks it and does the stripping.
strip: install
	$(if $(wildcard notebooks/*.ipynb),$(VENV)/bin/python tests/test_notebooks_clean.py $(wildcard notebooks/*.ipynb),@echo "no notebooks to strip")

$(DB):
	$(VENV)/bin/feedlab synth --db $(DB)

$(MODELS): $(DB)
	@echo "training the models of every surface"
	$(VENV)/bin/feedlab train --db $(DB) --surface all $(TRAIN_ARGS) > /dev/null
	@touch $@

install: $(VENV)/.installed

$(VENV)/.installed: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/python -m pip install --quiet "uv==$(UV_VERSION)"

# Each benchmark prints JSON of what it measured, on which machine; benchmarks/run.py runs them
# all and writes benchmarks/results.json and benchmarks/RESULTS.md (bench_predict takes ~15 min).
bench: install $(MODELS)
	$(VENV)/bin/python benchmarks/run.py

clean:
	rm -rf $(VENV) .tools .pytest_cache
