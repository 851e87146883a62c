# Quickstart: `make demo` (set up what the default episode needs, then run it), `make test` (set up everything the
# tests need, then run them). Set-up is per need and instant when nothing changed: scripts/setup.sh.
PY := .venv/bin/python

.PHONY: setup setup-test demo test docs docs-serve lint bench kill-anywhere clean

setup:
	@bash scripts/setup.sh demo

setup-test:
	@bash scripts/setup.sh test

demo: setup
	$(PY) -m graph.run

test: setup-test
	$(PY) -m pytest -q

docs:
	@bash scripts/setup.sh docs
	$(PY) -m mkdocs build --strict

docs-serve:
	@bash scripts/setup.sh docs
	$(PY) -m mkdocs serve

lint:
	@bash scripts/setup.sh lint
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) scripts/check_imports.py

bench:
	@bash scripts/setup.sh graph,pretrained,bench
	$(PY) -m bench --preset cpu --controllers static,random,rule,tpe --seeds 3 --out runs/bench-cpu

kill-anywhere: setup
	$(PY) benchmarks/kill_anywhere.py --n 20

clean:
	rm -rf runs site .pytest_cache
