# Set-up is part of every target: a fresh machine needs only Python 3.11, Java 17 and make.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install -c constraints.txt

.PHONY: install test test-all demo bench lint clean

$(BIN)/propensity: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e '.[dev]'
	touch $@

install: $(BIN)/propensity

test: install            ## the test suite (what CI runs)
	$(BIN)/pytest -q

demo: install            ## the daily cycle end to end on generated data, in ./demo
	$(BIN)/propensity demo --dir demo

bench: install           ## every benchmark (slow: run by hand)
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) demo propensity-data .pytest_cache
