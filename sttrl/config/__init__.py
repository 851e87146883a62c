"""One typed config tree (:mod:`sttrl.config.schema`), read from presets, files and ``--set`` overrides
(:mod:`sttrl.config.load`); the sections that have a module of their own: the controllers' sections (agent,
lookahead, bench), instance sets, the policy section, the block cache and what a sink URL may hold. Secrets never
enter a config (:func:`secret` reads them)."""

from sttrl.config.cache import CacheConfig
from sttrl.config.control import AgentConfig, BenchConfig, LookaheadConfig
from sttrl.config.data import DataConfig, HubDataConfig, ModelConfig
from sttrl.config.instances import InstancesConfig
from sttrl.config.load import (
    absolute_paths,
    add_config_arguments,
    available_presets,
    config_from_dict,
    load_config,
    parse_override,
    path_fields,
    secret,
    with_fields,
)
from sttrl.config.policy import PolicyConfig
from sttrl.config.schema import (
    PRESET_DIR,
    Config,
    EnvConfig,
    RewardConfig,
    RunConfig,
    TrainConfig,
)

__all__ = [
    "PRESET_DIR",
    "AgentConfig",
    "BenchConfig",
    "CacheConfig",
    "Config",
    "DataConfig",
    "EnvConfig",
    "HubDataConfig",
    "InstancesConfig",
    "LookaheadConfig",
    "ModelConfig",
    "PolicyConfig",
    "RewardConfig",
    "RunConfig",
    "TrainConfig",
    "absolute_paths",
    "add_config_arguments",
    "available_presets",
    "config_from_dict",
    "load_config",
    "parse_override",
    "path_fields",
    "secret",
    "with_fields",
]
