"""``python -m graph.bench``: runs ``python -m bench`` (the old name, kept)."""

import runpy

if __name__ == "__main__":
    runpy.run_module("bench", run_name="__main__", alter_sys=True)
