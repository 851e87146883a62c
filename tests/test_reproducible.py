"""An episode's numbers depend only on (config, instance, seed, decisions), never on what the process ran before:
the ``debug`` version of ``benchmarks/reproducible.py`` (the ``cpu`` version, real Whisper tiny.en, is that script's
default: it synthesizes a corpus and converts the model first, about 15 minutes on 2 cores)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from reproducible import PRESET_EXTRA, same_alone_and_after


def test_debug_episode_is_bit_identical_alone_and_after_other_work(data_cache, tmp_path):
    alone, after = same_alone_and_after("debug", data_cache, tmp_path, PRESET_EXTRA["debug"])
    assert alone == after
    assert len(alone) == 4 and len(alone[1]["losses"]) == 2
