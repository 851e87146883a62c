# Quickstart: `make demo` (set up + default offline episode), `make test` (set up + tests).
PY := .venv/bin/python

.PHONY: setup setup-test demo test bench kill-anywhere clean

setup:
	@bash scripts/setup.sh

setup-test:
	@bash scripts/setup.sh --test

demo: setup
	$(PY) -m graph.run

test: setup-test
	$(PY) -m pytest -q

bench: setup
	$(PY) -m bench --preset cpu --controllers static,random,rule,tpe --seeds 3 --out runs/bench-cpu

kill-anywhere: setup
	$(PY) benchmarks/kill_anywhere.py --n 20

clean:
	rm -rf runs .pytest_cache
