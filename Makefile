# `make bench` runs the main job, `make test` the test suite; both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: bench test clean

# runtime/ is the embeddable runtime's own distribution (keras-compress-runtime), a dependency of the toolkit that
# is not on PyPI: both are installed in one pip command so the toolkit's requirement resolves to the checkout's copy.
$(STAMP): pyproject.toml runtime/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ./runtime -e '.[test]'
	touch $(STAMP)

bench: $(STAMP)
	$(PY) -m benchmarks run $(ARGS)
	$(PY) -m benchmarks report

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

clean:
	rm -rf .cache results
