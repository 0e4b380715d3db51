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

LOWER_VENV ?= .venv-lower
# A fast subset that touches every dependency: IFS/rendering (numba), datasets and both writers (tfds,
# array-record, pillow), the trainer end to end (jax, flax, optax, orbax, grain), Lion, timm export
# (safetensors), SR metrics (scikit-image, scipy).
LOWER_TESTS = tests/fractalpre/fractals/test_ifs.py tests/fractalpre/fractals/test_render.py \
	tests/fractalpre/fractals/test_sources.py tests/fractalpre/test_configs.py tests/fractalpre/test_export.py \
	tests/fractalpre/optim/test_lion.py tests/fractalpre/test_generate_train.py tests/fractalpre/util/test_files.py \
	tests/superres/curation/test_metrics.py tests/superres/curation/test_quality.py

.PHONY: setup tcmalloc demo test test-lower-bounds bench

setup: $(STAMP) tcmalloc

# XLA:CPU trains about 1.5x faster under tcmalloc (fractalpre/cpu_allocator.py): installed where the system
# allows (root with apt-get), a hint otherwise. The trainers preload it themselves; the tests get it here.
TCMALLOC_LIB = $$(/sbin/ldconfig -p 2>/dev/null | awk '/libtcmalloc_minimal\.so\.4 /{print $$NF; exit}')
tcmalloc:
	@if [ -z "$(TCMALLOC_LIB)" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get install -y -q libtcmalloc-minimal4 >/dev/null 2>&1 || echo "could not install libtcmalloc-minimal4: CPU training runs without tcmalloc"; \
	  else echo "hint: CPU training is about 1.5x faster with tcmalloc: apt-get install libtcmalloc-minimal4 (as root)"; fi; fi

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
	LD_PRELOAD=$(TCMALLOC_LIB) $(PYTHON) -m pytest -q -n 2 tests
	$(MAKE) test-lower-bounds

# The declared minimum versions (pyproject.toml), installed exactly, in a second environment.
test-lower-bounds:
	@if [ ! -x $(LOWER_VENV)/bin/python ]; then python3 -m venv $(LOWER_VENV); fi
	$(LOWER_VENV)/bin/python -m pip install -q --upgrade pip
	$(LOWER_VENV)/bin/python .ci/lower_bounds.py > $(LOWER_VENV)/lower-bounds.txt
	$(LOWER_VENV)/bin/python -m pip install -q -r $(LOWER_VENV)/lower-bounds.txt
	$(LOWER_VENV)/bin/python -m pip install -q --no-deps -e .
	LD_PRELOAD=$(TCMALLOC_LIB) $(LOWER_VENV)/bin/python -m pytest -q -n 2 $(LOWER_TESTS)

bench: setup
	$(PYTHON) benchmarks/bench_generate.py
	$(PYTHON) benchmarks/bench_train.py
