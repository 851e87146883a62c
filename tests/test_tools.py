"""The LangChain tools over sttrl: typed schemas with the run injected, real results, idempotence."""

from __future__ import annotations

import pytest
from langchain_core.callbacks import BaseCallbackHandler

from tools import evaluate, train_block


def test_schemas_hide_the_injected_run():
    schema = train_block.tool_call_schema.model_json_schema()
    assert set(schema["properties"]) == {"step"}
    step = schema["$defs"]["Pending"]["properties"]
    assert {"step", "action", "hp_before", "hp_after", "rationale"} <= set(step)
    assert set(evaluate.tool_call_schema.model_json_schema()["properties"]) == {"block"}
    # the docstring is the contract: each tool states what it returns and its own idempotence rule
    contracts = [
        (train_block, ("Returns", "Idempotent", "rolls the model back")),
        (evaluate, ("Returns", "Cached on disk")),
    ]
    for t, phrases in contracts:
        missing = [p for p in phrases if p not in t.description]
        assert not missing, f"{t.name}'s description lacks {missing}"
        assert "episode" not in t.tool_call_schema.model_json_schema()["properties"]


def test_arguments_are_validated():
    from pydantic import ValidationError

    hp = {"lr": 1e-3, "batch_size": 4, "grad_accum": 1, "freeze_layers": 0}
    with pytest.raises(ValidationError):  # blocks are numbered from 1
        train_block.invoke({"step": {**_step(hp), "step": 0}, "episode": object()})
    with pytest.raises(ValidationError):  # the hyperparameters a block needs
        train_block.invoke({"step": {**_step(hp), "hp_after": {"lr": 1e-3}}, "episode": object()})
    with pytest.raises(ValidationError):
        evaluate.invoke({"block": -1, "episode": object()})


def _step(hp: dict, n: int = 1) -> dict:
    return {
        "step": n,
        "action": "keep",
        "rationale": "test",
        "source": "test",
        "hp_before": hp,
        "hp_after": hp,
        "clamped": False,
        "note": "",
        "seconds": 0.0,
    }


class ToolRuns(BaseCallbackHandler):
    def __init__(self) -> None:
        self.started: list[str] = []
        self.ended: list[object] = []

    def on_tool_start(self, serialized, input_str, **kwargs):
        self.started.append(serialized["name"])

    def on_tool_end(self, output, **kwargs):
        self.ended.append(output)


def test_tools_train_and_evaluate_for_real(make_config, tmp_path):
    from sttrl.env.episode import Episode
    from sttrl.env.runtime import EpisodeRuntime

    rt = EpisodeRuntime(make_config(), tmp_path / "run", progress=False)
    ep = Episode(rt)
    hp = rt.initial_hp().to_dict()
    steps: list = []
    runs = ToolRuns()
    out = train_block.invoke({"step": _step(hp), "episode": ep, "on_step": steps.append}, config={"callbacks": [runs]})
    res, ckpt = out["result"], out["checkpoint"]
    assert res["status"] == "ok" and res["steps"] == rt.cfg.env.steps_per_action == len(steps)
    assert all(s.loss > 0 and s.samples_per_s > 0 for s in steps) and res["global_step"] == 2
    assert (
        ckpt["block"] == 1 and len(ckpt["sha256"]) == 64 and (tmp_path / "run" / "checkpoints" / "block-0001").is_dir()
    )
    again = train_block.invoke({"step": _step(hp), "episode": ep, "on_step": steps.append})
    assert again == out and len(steps) == 2  # loaded, not trained again
    ev = evaluate.invoke({"block": 1, "episode": ep}, config={"callbacks": [runs]})
    assert ev["cer"] >= 0 and ev["wer"] >= 0 and ev["n"] == rt.cfg.train.max_eval_utterances
    assert evaluate.invoke({"block": 1, "episode": ep}) == ev  # cached per block
    assert runs.started == ["train_block", "evaluate"] and len(runs.ended) == 2
