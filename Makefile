# `make bench` runs the main job, `make test` the test suite; both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: bench test clean gpu

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

# pytest-xdist: one worker per core (up to 4; each holds TensorFlow, ~2 GB): measured 26.5 min serial on 2 cores,
# where one test at a time kept the machine only half busy. Modules with a costly shared set-up (Ray, compress
# auto's search, the runtime venv) each stay on one worker (xdist_group).
test: $(STAMP)
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist loadgroup $(ARGS)

# On an NVIDIA machine: the GPU builds of ONNX Runtime and TensorFlow in place of the CPU ones. ONNX Runtime's
# builds all install one `onnxruntime` module, so only one may be installed: the CPU build goes first.
gpu: $(STAMP)
	$(PY) -m pip uninstall -q -y onnxruntime onnxruntime-gpu
	$(PY) -m pip install -q 'onnxruntime-gpu>=1.20' 'tensorflow[and-cuda]==2.21.*'
	$(PY) -c "from benchmarks.runtimes.onnxruntime import build_line; print(build_line())"

clean:
	rm -rf .cache results
