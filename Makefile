# Two entry points: `make demo` (the main job on bundled data) and `make test`; `make benchmark` times methods.
# Each creates .venv from requirements.lock on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test benchmark clean

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

demo: $(VENV)/.installed
	$(PY) -m tokenattr.demo --out outputs/demo

test: $(VENV)/.installed
	$(PY) -m pytest -q

# The issue-8 key figures on the CPU (about 20 minutes on 2 cores); BENCHMARK_ARGS= runs every model and method.
BENCHMARK_ARGS ?= --threads 1 --models vit-b16 --methods ours-h ours-h:feedback_path=last-attention \
	--batch-sizes 1 16 --warmup 0 --repeats 3
benchmark: $(VENV)/.installed
	$(PY) benchmarks/bench.py $(BENCHMARK_ARGS)

clean:
	rm -rf $(VENV) outputs
