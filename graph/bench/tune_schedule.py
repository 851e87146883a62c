"""``python -m graph.bench.tune_schedule``: runs ``python -m bench.tune_schedule`` (the old name, kept)."""

import runpy

if __name__ == "__main__":
    runpy.run_module("bench.tune_schedule", run_name="__main__", alter_sys=True)
