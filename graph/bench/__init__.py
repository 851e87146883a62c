"""The old command-line names ``python -m graph.bench`` and ``python -m graph.bench.tune_schedule``, kept as aliases.

The benchmark is the top-level package :mod:`bench` (a client of ``graph`` and ``sttrl``, not part of the graph).
The aliases run it with :mod:`runpy` rather than importing it, so ``graph`` never imports ``bench``.
"""
