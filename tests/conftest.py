"""Shared fixtures: one synthesized debug corpus per test session, configs that write under tmp dirs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

from sttrl.config import Config, load_config

torch.set_num_threads(2)

# The judge key and the hidden-split access log live outside run directories (sttrl.integrity): tests use a
# folder of their own, never the developer's ~/.local/share/sttrl; subprocesses inherit it.
os.environ["STTRL_HOME"] = tempfile.mkdtemp(prefix="sttrl-home-")
os.environ.pop("STTRL_JUDGE_KEY", None)


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache directory shared by the whole session: synthesis and model files are built once."""
    return tmp_path_factory.mktemp("sttrl-cache")


@pytest.fixture
def make_config(data_cache: Path, tmp_path: Path):
    """``make_config(*overrides, preset="debug")`` -> a Config writing runs under this test's tmp dir."""

    def _make(*overrides: str, preset: str = "debug") -> Config:
        return load_config(
            preset, overrides=[f"data.cache_dir={data_cache}", f"run.out_dir={tmp_path / 'runs'}", *overrides]
        )

    return _make
