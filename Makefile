# `make bench` runs the main job, `make test` the test suite; both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: bench test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

bench: $(STAMP)
	$(PY) -m benchmarks run $(ARGS)
	$(PY) -m benchmarks report

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

clean:
	rm -rf .cache results
