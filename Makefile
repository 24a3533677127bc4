# m2bert — two commands: `make demo` and `make test`. Both install what is missing first.
SHELL := bash
.SHELLFLAGS := -o pipefail -c
PY_SYS ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test test-fast demo bench lint clean

install: $(STAMP)

# Idempotent: reinstalls only when requirements.txt or pyproject.toml change.
$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PY_SYS) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check --no-compile -q -r requirements.txt 2>&1 | sed "/^WARNING: Location/d"
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -e . 2>&1 | sed "/^WARNING: Location/d"
	$(PY) -c "import m2bert, torch, composer, streaming, hydra" && touch $(STAMP)

test: install
	$(PY) -m pytest tests

demo: install
	$(PY) -m m2bert.demo

bench: install
	$(PY) bench/throughput.py --device cpu --lengths 128 512 2048 8192 --json bench/results/throughput_cpu.json

lint: install
	$(PY) -m pip install -q ruff==0.14.5 2>&1 | sed "/^WARNING: Location/d"
	$(VENV)/bin/ruff check src tests bench data_prep kernels

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info src/*.egg-info
