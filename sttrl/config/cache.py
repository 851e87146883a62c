"""The ``cache`` section of the config: the block cache (:mod:`sttrl.env.blockcache`), which hands a rollout the
recorded result of a training block already trained from the same state instead of training it again."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class CacheConfig(BaseModel):
    """Where the block cache lives and how much checkpoint data it may keep."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = Field(
        False,
        description="Look every block (and every evaluation) up in the block cache before training (evaluating) it; "
        "exact when episodes are bit-reproducible (the debug preset, one thread).",
    )
    dir: Path | None = Field(None, description="The cache directory; null = <data.cache_dir>/blocks.")
    max_checkpoint_gb: float = Field(
        2.0,
        ge=0.0,
        le=10_000.0,
        description="Size limit of the kept checkpoints (least recently used go first); metrics are always kept. "
        "0 keeps metrics only: a hit then replays the block from its parent.",
    )
