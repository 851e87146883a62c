import json
import os

import pytest

from sttrl.config import available_presets, load_config, parse_override
from sttrl.errors import ConfigError


def test_presets_load():
    names = available_presets()
    for required in ("debug", "cpu", "whisper-small", "whisper-base", "whisper-tiny-en"):
        assert required in names
    for name in names:
        cfg = load_config(name)
        assert cfg.preset == name


def test_dotted_override_parses_yaml_values():
    cfg = load_config("debug", overrides=["train.lr=3e-4", "env.max_actions=5", "data.voices=[sw]"])
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.env.max_actions == 5
    assert cfg.data.voices == ["sw"]
    assert parse_override("a.b.c=1") == {"a": {"b": {"c": 1}}}


def test_unknown_key_names_the_field():
    with pytest.raises(ConfigError, match=r"train\.learning_rate: unknown key"):
        load_config("debug", overrides=["train.learning_rate=1e-3"])


def test_out_of_range_names_field_and_range():
    with pytest.raises(ConfigError, match=r"train\.lr .*\[train\.lr_min, train\.lr_max\]"):
        load_config("debug", overrides=["train.lr=0.5", "train.lr_max=0.1"])
    with pytest.raises(ConfigError, match=r"env\.steps_per_action: Input should be greater than or equal to 1"):
        load_config("debug", overrides=["env.steps_per_action=0"])


def test_bad_action_and_domain():
    with pytest.raises(ConfigError, match="env.actions: unknown"):
        load_config("debug", overrides=["env.actions=[keep, jump]"])
    with pytest.raises(ConfigError, match="hidden_domain"):
        load_config("debug", overrides=["data.hidden_domain=health"])


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ConfigError, match="unknown preset 'nope'; valid presets: .*debug"):
        load_config("nope")


def test_file_round_trip(tmp_path):
    cfg = load_config("debug", overrides=["run.seed=7"])
    for suffix in (".yaml", ".json"):
        path = cfg.save(tmp_path / f"c{suffix}")
        again = load_config(None, path)
        assert again.to_dict() == cfg.to_dict()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": {"batch_size": "many"}}))
    with pytest.raises(ConfigError, match="train.batch_size"):
        load_config("debug", bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("debug", tmp_path / "missing.yaml")


def test_malformed_yaml_is_one_line_with_file_and_line_and_no_content(tmp_path):
    """Issue 24 items 1 and 6: PyYAML's own message is 8 lines and quotes the file; ours names file, line and column."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("db_password: hunter2\ntrain:\n  lr: [0.1\n")
    with pytest.raises(ConfigError) as info:
        load_config("debug", bad)
    text = str(info.value)
    assert "\n" not in text and str(bad) in text and "line 4, column 1" in text and "hunter2" not in text, text
    with pytest.raises(ConfigError) as info:
        load_config("debug", overrides=["train.lr=[0.1"])
    assert "\n" not in str(info.value) and "line 1" in str(info.value)


def test_a_preset_is_a_name_never_a_path(tmp_path):
    """Issue 24 item 1: ``PRESET_DIR / f"{preset}.yaml"`` read any YAML file a name like ``../../x`` pointed at."""
    outside = tmp_path / "secret.yaml"
    outside.write_text("preset: leaked\n")
    from sttrl.config import PRESET_DIR

    relative = os.path.relpath(outside.with_suffix(""), PRESET_DIR)
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config(relative)
