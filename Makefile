# Quickstart: `make demo` (set up + default offline episode), `make test` (set up + tests).
PY := .venv/bin/python

.PHONY: setup setup-test demo test base bench clean

setup:
	@bash scripts/setup.sh

setup-test:
	@bash scripts/setup.sh --test

demo: setup
	$(PY) -m graph.run

test: setup-test
	$(PY) -m pytest -q

clean:
	rm -rf runs .pytest_cache
