# `make demo` and `make test` set everything up themselves: they use the active virtual environment,
# or create .venv when none is active, and install the package with its test extras into it.
VENV ?= .venv
ifdef VIRTUAL_ENV
PYTHON := python
STAMP := $(VIRTUAL_ENV)/.fractalpre-installed
else
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.fractalpre-installed
endif
DEMO_OUT ?= demo_out

.PHONY: setup demo test bench

setup: $(STAMP)

$(STAMP): setup.py pyproject.toml
	@if [ -z "$$VIRTUAL_ENV" ] && [ ! -x $(VENV)/bin/python ]; then python3 -m venv $(VENV); fi
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q -e '.[dev]'
	touch $@

demo: setup
	$(PYTHON) -m fractalpre preview --dataset 1p-frac --count 16 --out $(DEMO_OUT)/preview_1pfrac.png
	$(PYTHON) -m fractalpre preview --dataset fractaldb --classes 16 --instances 1 --size 224 --count 16 --out $(DEMO_OUT)/preview_fractaldb.png
	$(PYTHON) -m fractalpre generate --dataset 1p-frac --classes 100 --size 224 --out $(DEMO_OUT)/1pfrac_100
	$(PYTHON) scripts/pretrain_finetune_demo.py --workdir $(DEMO_OUT)/story

test: setup
	$(PYTHON) -m pytest -q -n 2 tests

bench: setup
	$(PYTHON) benchmarks/bench_generate.py
	$(PYTHON) benchmarks/bench_train.py
