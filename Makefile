# feedlab: two commands set everything up on a fresh clone (Python 3.11 and make are enough).
#   make lab    install into .venv from uv.lock, build data/feedlab.duckdb if missing, open JupyterLab
#   make test   install the same way and run every test (unit tests, then notebooks under nbval)

PYTHON ?= $(shell command -v python3.11 || command -v python3)
UV_VERSION := 0.13.9
# Use uv from PATH when there is one; otherwise bootstrap a pinned uv into .tools (git-ignored).
UV ?= $(shell command -v uv || echo .tools/bin/uv)
VENV := .venv
DB ?= data/feedlab.duckdb
LAB_ARGS ?=
# XGBoost's OpenMP threads spin-wait by default, which slows a shared 2-core machine 4-6x.
export OMP_WAIT_POLICY := PASSIVE

.PHONY: lab test data install bench clean

lab: install $(DB)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

test: install
	$(VENV)/bin/python -m pytest
	@if ls notebooks/*.ipynb >/dev/null 2>&1; then \
		$(VENV)/bin/python -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider notebooks; \
	fi

data: install $(DB)

$(DB):
	$(VENV)/bin/feedlab synth --db $(DB)

install: $(VENV)/.installed

$(VENV)/.installed: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/python -m pip install --quiet "uv==$(UV_VERSION)"

# Each benchmark prints JSON of what it measured, on which machine (bench_predict takes ~15 min).
bench: install $(DB)
	$(VENV)/bin/python benchmarks/bench_store.py
	$(VENV)/bin/python benchmarks/bench_predict.py --db $(DB)
	$(VENV)/bin/python benchmarks/bench_rank.py --db $(DB) --surface explore

clean:
	rm -rf $(VENV) .tools .pytest_cache
