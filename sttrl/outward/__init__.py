"""Trajectories outward: the append-only trajectory file, sinks (any fsspec URL), trackers (W&B, MLflow), the
background publisher, ``python -m sttrl.sync`` and ``python -m sttrl.export`` (runs as a ``datasets`` Dataset)."""
