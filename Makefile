# Two entry points: `make demo` (the main job on bundled data) and `make test`.
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

benchmark: $(VENV)/.installed
	$(PY) benchmarks/bench_vit.py

clean:
	rm -rf $(VENV) outputs
