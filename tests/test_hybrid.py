"""``hybrid``: successive halving whose rung choices an LLM makes. The answer's schema and its reconciliation with
the default rule by hand; a debug benchmark with a deterministic fake chat model (its choices recorded, compared
with the rule, applied within sha's budget); and once with a tiny local LM through constrained decoding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage

import bench
from bench.hybrid import choice_schema, reconcile
from bench.suites import DEBUG_INSTANCES

SETS = (*DEBUG_INSTANCES, "env.samples_per_action=16")  # 2 blocks of 16 samples


class FakePopulationChat:
    """A fake chat model (tests only): keeps the worst-ranked members the answer's schema allows, the first of them
    at a lower learning rate; records every prompt it was sent."""

    def __init__(self) -> None:
        self.prompts: list[list[str]] = []

    def with_structured_output(self, schema, include_raw=False):
        fake = self

        class Runner:
            def invoke(self, messages):
                fake.prompts.append([m.content for m in messages])
                js = schema.model_json_schema()
                ranked = js["$defs"]["Member"]["properties"]["trial"]["enum"]
                size = js["properties"]["members"]["minItems"]
                members = [{"trial": t, "lr": "lower" if i == 0 else "same"} for i, t in enumerate(ranked[::-1][:size])]
                parsed = schema(members=members, rationale="fake: the worst members")
                return {"raw": AIMessage(parsed.model_dump_json()), "parsed": parsed, "parsing_error": None}

        return Runner()


def test_the_answer_schema_and_its_reconciliation_with_the_default_rule():
    schema = choice_schema([3, 0, 2], 2)
    js = schema.model_json_schema()
    assert js["$defs"]["Member"]["properties"]["trial"]["enum"] == [3, 0, 2]
    assert js["properties"]["members"]["minItems"] == js["properties"]["members"]["maxItems"] == 2
    full = schema(members=[{"trial": 2, "lr": "higher"}, {"trial": 3, "lr": "same"}], rationale="r")
    assert reconcile(full, [3, 0, 2], 2) == ([2, 3], {2: "higher", 3: "same"}, "llm")
    twice = schema.model_construct(members=[full.members[0], full.members[0]], rationale="r")  # a repeated member
    assert reconcile(twice, [3, 0, 2], 2) == ([2, 3], {2: "higher", 3: "same"}, "llm-partial")
    assert reconcile(None, [3, 0, 2], 2) == ([3, 0], {3: "same", 0: "same"}, "fallback")


def test_hybrid_in_the_benchmark_with_a_fake_chat_model(make_config, tmp_path):
    cfg = make_config(*SETS)
    fake = FakePopulationChat()
    doc = bench.run_bench(
        cfg,
        ["sha", "hybrid"],
        [1000],
        tmp_path / "b",
        quiet=True,
        optuna_trials=4,
        agent_factory=lambda c, _cfg: fake if c == "hybrid" else None,
    )
    runs = {r["controller"]: r for r in doc["runs"]}
    assert all(r["status"] == "finished" for r in runs.values()), doc["runs"]
    sha, hyb = runs["sha"], runs["hybrid"]
    assert hyb["rungs"] == sha["rungs"] == [4, 2, 1] and hyb["train_samples"] <= 32 and sha["train_samples"] <= 32
    assert hyb["llm_choices"] == 2 and hyb["differs_from_rule"] == 2 and hyb["differs_share"] == 1.0
    assert hyb["choice_sources"] == {"llm": 2, "llm-partial": 0, "fallback": 0} and hyb["model"].startswith("injected")
    first = hyb["choices"][0]
    assert first["chosen"] == first["ranked"][::-1][:2] and first["default"] == first["ranked"][:2]
    # the first rung's trials are sha's (same draws, same data): the fake changed only what happened next
    sha_rung0 = sorted((t["trial"], t["val_wer"]) for t in sha["trials"] if t["rung"] == 0)
    assert sorted((t["trial"], t["val_wer"]) for t in hyb["trials"] if t["rung"] == 0) == sha_rung0
    lowered = first["chosen"][0]
    before = next(t for t in hyb["trials"] if t["trial"] == lowered and t["rung"] == 0)["hp"]["lr"]
    after = next(t for t in hyb["trials"] if t["trial"] == lowered and t["rung"] == 1)["hp"]["lr"]
    assert after == pytest.approx(before / cfg.bench.hybrid_lr_factor)
    system, step = fake.prompts[0]
    assert "successive halving" in system and "validation WER per rung" in step and "{" not in step
    assert (Path(hyb["run_dir"]) / "choices" / "rung-0.json").is_file()
    # resumed: the choices are read back, nothing is asked again
    again = bench.run_bench(cfg, ["hybrid"], [1000], tmp_path / "b", quiet=True, optuna_trials=4)
    assert again["runs"][0]["choices"] == hyb["choices"] and len(fake.prompts) == 2


def test_hybrid_with_a_tiny_local_lm(make_config, tiny_lm, tmp_path):
    cfg = make_config(*SETS, f"bench.hybrid_model=local:{tiny_lm}")
    doc = bench.run_bench(cfg, ["hybrid"], [1000], tmp_path / "b", quiet=True, optuna_trials=4)
    (run,) = doc["runs"]
    assert run["status"] == "finished", run.get("error")
    assert run["model"] == f"local:{tiny_lm}" and run["llm_choices"] == 2
    for choice in run["choices"]:  # constrained decoding: every answer parses into the schema
        assert choice["source"] in ("llm", "llm-partial") and not choice["errors"], choice
        assert len(choice["chosen"]) == len(set(choice["chosen"])) == len(choice["default"])
    record = json.loads((Path(run["run_dir"]) / "choices" / "rung-1.json").read_text())
    assert set(record) >= {"ranked", "default", "chosen", "moves", "differs_promote", "differs_explore", "seconds"}
