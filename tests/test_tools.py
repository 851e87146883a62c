"""The LangChain tools over sttrl: typed schemas with the run injected, real results, idempotence."""

from __future__ import annotations

import pytest
from langchain_core.callbacks import BaseCallbackHandler

from tools import evaluate, train_block


def test_schemas_hide_the_injected_run():
    train_props = train_block.tool_call_schema.model_json_schema()["properties"]
    assert set(train_props) == {"block", "lr", "batch_size", "grad_accum", "freeze_layers"}
    assert set(evaluate.tool_call_schema.model_json_schema()["properties"]) == {"block"}
    assert train_props["block"]["minimum"] == 1 and train_props["lr"]["exclusiveMinimum"] == 0
    # the docstring is the contract: each tool states what it returns and its own idempotence rule
    contracts = [(train_block, ("Returns", "Idempotent", "rolls the model back")), (evaluate, ("Returns", "Cached on disk"))]
    for t, phrases in contracts:
        missing = [p for p in phrases if p not in t.description]
        assert not missing, f"{t.name}'s description lacks {missing}"
        assert "episode" not in t.tool_call_schema.model_json_schema()["properties"]


def test_arguments_are_validated():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        train_block.invoke({"block": 0, "lr": 1e-3, "batch_size": 4, "grad_accum": 1, "freeze_layers": 0,
                            "episode": object()})
    with pytest.raises(ValidationError):
        evaluate.invoke({"block": -1, "episode": object()})


class ToolRuns(BaseCallbackHandler):
    def __init__(self) -> None:
        self.started: list[str] = []
        self.ended: list[object] = []

    def on_tool_start(self, serialized, input_str, **kwargs):  # noqa: ANN001
        self.started.append(serialized["name"])

    def on_tool_end(self, output, **kwargs):  # noqa: ANN001
        self.ended.append(output)


def test_tools_train_and_evaluate_for_real(make_config, tmp_path):
    from sttrl.runtime import EpisodeRuntime

    rt = EpisodeRuntime(make_config(), tmp_path / "run", progress=False)
    hp = rt.initial_hp().to_dict()
    steps: list = []
    runs = ToolRuns()
    out = train_block.invoke({"block": 1, **hp, "episode": rt, "on_step": steps.append}, config={"callbacks": [runs]})
    res, ckpt = out["result"], out["checkpoint"]
    assert res["status"] == "ok" and res["steps"] == rt.cfg.env.steps_per_action == len(steps)
    assert all(s.loss > 0 and s.samples_per_s > 0 for s in steps) and res["global_step"] == 2
    assert ckpt["block"] == 1 and len(ckpt["sha256"]) == 64 and (tmp_path / "run" / "checkpoints" / "block-0001").is_dir()
    again = train_block.invoke({"block": 1, **hp, "episode": rt, "on_step": steps.append})
    assert again == out and len(steps) == 2  # loaded, not trained again
    ev = evaluate.invoke({"block": 1, "episode": rt}, config={"callbacks": [runs]})
    assert 0 <= ev["cer"] and ev["wer"] >= 0 and ev["n"] == rt.cfg.train.max_eval_utterances
    assert evaluate.invoke({"block": 1, "episode": rt}) == ev  # cached per block
    assert runs.started == ["train_block", "evaluate"] and len(runs.ended) == 2
