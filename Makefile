# Quickstart: `make demo` (set up what the default episode needs, then run it), `make test` (set up everything the
# tests need, then run them). Set-up is per need and instant when nothing changed: scripts/setup.sh.
PY := .venv/bin/python
# uv installs without compiling bytecode (compiling all of torch costs ~20 s a fresh set-up); Python then writes
# the .pyc of what it imports on first use. Some machines set PYTHONDONTWRITEBYTECODE=1, which would make every
# process compile its imports again (~5 s each): the targets here let Python write them.
export PYTHONDONTWRITEBYTECODE =

.PHONY: setup setup-test demo test docs docs-serve lint bench kill-anywhere clean

setup:
	@bash scripts/setup.sh demo

setup-test:
	@bash scripts/setup.sh test

demo: setup
	$(PY) -m graph.run

test: setup-test
	$(PY) -m pytest -q -n 2 --dist loadfile

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
