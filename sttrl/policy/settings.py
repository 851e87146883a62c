"""The ``policy`` section of the config (learning a controller), its presets and sweeps.

Presets are partial ``policy:`` mappings in ``sttrl/presets/policy/<name>.yaml`` (``debug``, ``small``, ``full``),
merged by ``load_config(..., policy_preset=name)`` after the main preset and before a file and ``--set``.
:func:`sweep` expands ``{field: [values]}`` into validated configs (the cartesian product).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from sttrl.config import Config
from sttrl.config.load import _merge, config_from_dict
from sttrl.config.policy import (  # noqa: F401 - the names callers import from here
    POLICY_PRESET_DIR,
    PolicyConfig,
    policy_presets,
)
from sttrl.errors import ConfigError


def sweep(base: Config, grid: Mapping[str, Sequence[Any]]) -> list[Config]:
    """Every combination of ``grid``'s values over ``base`` as validated configs. Keys are dotted config fields
    (``policy.lr``, ``train.lr``); a key without a dot is a ``policy`` field. A bad value names its field."""
    keys = [k if "." in k else f"policy.{k}" for k in grid]
    for key, values in zip(keys, grid.values(), strict=True):
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ConfigError(f"sweep field {key}: give a non-empty list of values")
    out = []
    for combo in itertools.product(*grid.values()):
        data = base.to_dict()
        for key, value in zip(keys, combo, strict=True):
            nested: Any = value
            for part in reversed(key.split(".")):
                nested = {part: nested}
            data = _merge(data, nested)
        out.append(config_from_dict(data))
    return out
