"""GRPO through TRL's GRPOTrainer on live debug episodes (python -m sttrl.learn --stage grpo), then the saved policy
decides a judged `graph.run --agent learned` episode through its tools; the environment_factory's rollout class as
TRL drives it (tools, rewards from the episode, a group's rollouts from one instance and state).

A randomly initialized model never writes a tool call, so the TRL test samples with ``FakeToolCallingLM``: a tiny
real Llama (TRL computes its log-probabilities and updates its weights) whose ``generate`` is scripted to call one
tool per turn from a fixed plan per rollout. Everything else is real: TRL's tool loop and loss, the
episodes, the block cache, the judge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM
from trl.chat_template_utils import qwen2_5_chat_template

from sttrl.config import load_config
from sttrl.errors import SessionError
from sttrl.policy.controller import META_FILE
from sttrl.policy.learn import main as learn_main
from sttrl.policy.tools import conversation, rollout_class, tool_call, tools_of
from sttrl.rundir import JUDGE_REPORT, TRAJECTORY


class FakeToolConfig(LlamaConfig):
    model_type = "fake-tool-llama"
    auto_map = {}  # not a config field; transformers and TRL read it to load a non-transformers class


class FakeToolCallingLM(LlamaForCausalLM):
    """A tiny Llama whose sampling is scripted (see the module docstring); its forward pass is the real one."""

    config_class = FakeToolConfig

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, **_: object) -> torch.Tensor:  # type: ignore[override]
        """Sequence i of a batch (rollout i of the group) calls ``tool_plan[i][turn]`` (``stop`` past its plan); the
        turn is read from the conversation (two turns end per tool round after the system and user turns)."""
        c = self.config
        turns = []
        for i, seq in enumerate(input_ids.tolist()):
            turn = (seq.count(c.eos_token_id) - 2) // 2
            plan = c.tool_plan[i % len(c.tool_plan)]
            turns.append(c.tool_call_ids[plan[turn] if turn < len(plan) else "stop"])
        new = torch.full((len(turns), max(len(t) for t in turns)), c.pad_token_id, dtype=input_ids.dtype)
        for i, t in enumerate(turns):
            new[i, : len(t)] = torch.tensor(t)
        return torch.cat([input_ids, new.to(input_ids.device)], dim=1)


PLAN = [["stop"], ["keep", "stop"], ["keep", "keep"]]  # returns 0, one step penalty, two (WER stays at 1 on debug)
AutoConfig.register(FakeToolConfig.model_type, FakeToolConfig)
AutoModelForCausalLM.register(FakeToolConfig, FakeToolCallingLM)


def _ids(tok, messages: list[dict], tools: list, generation_prompt: bool) -> list[int]:
    out = tok.apply_chat_template(messages, tools=tools, tokenize=True, add_generation_prompt=generation_prompt)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


@pytest.fixture(scope="module")
def fake_tool_lm(tmp_path_factory) -> Path:
    """A FakeToolCallingLM with a ChatML byte-level BPE tokenizer (learned from rendered rollout conversations, so a
    prompt is ~1,500 tokens) and Qwen2.5's tool template, saved like any model directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("fake-tool-lm")
    cfg = load_config("debug")
    tools = tools_of(cfg)
    start = {"step": 0, "steps_left": 2, "lr": 1e-3, "batch_size": 4, "grad_accum": 1, "freeze_layers": 0}
    start.update(max_freeze_layers=2, train_loss=4.5, wer=1.0, cer=0.9, best_wer=1.0, previous_wer=1.0, status="ok")
    texts = []
    for specials in (True, False):
        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        size = 1500 if texts else 300
        bpe.train_from_iterator(
            texts * 4 or ["x"],
            trainers.BpeTrainer(
                vocab_size=size, special_tokens=["<|im_start|>", "<|im_end|>"], initial_alphabet=alphabet
            ),
        )
        tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|im_end|>")
        tok.chat_template = qwen2_5_chat_template
        if specials:  # the first tokenizer only renders the texts the second one learns from
            texts = [
                tok.apply_chat_template([*conversation(start, [], cfg), tool_call(a)], tools=tools, tokenize=False)
                for a in cfg.env.actions
            ]
    head = _ids(tok, conversation(start, [], cfg), tools, True)
    calls = {}
    for action in cfg.env.actions:
        turn = _ids(tok, [*conversation(start, [], cfg), tool_call(action)], tools, False)[len(head) :]
        calls[action] = turn[: turn.index(tok.eos_token_id) + 1]
    torch.manual_seed(0)
    eos = tok.eos_token_id
    config = FakeToolConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        eos_token_id=eos,
        pad_token_id=eos,
        bos_token_id=eos,
        tool_call_ids=calls,
        tool_plan=PLAN,
    )
    FakeToolCallingLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _sets(data_cache: Path, tmp: Path) -> list[str]:
    overrides = [f"data.cache_dir={data_cache}", f"run.out_dir={tmp / 'runs'}", "env.max_actions=2"]
    overrides += ["cache.enabled=true", f"cache.dir={tmp / 'blocks'}", "env.instances.lr=[1e-4, 1e-2]"]
    return [x for s in overrides for x in ("--set", s)]


def test_one_grpo_step_then_the_policy_decides_a_judged_episode(fake_tool_lm, data_cache, tmp_path):
    sets = _sets(data_cache, tmp_path)
    grpo = ["--set", "policy.steps=1", "--set", "policy.batch_size=1", "--set", "policy.k_samples=3"]
    grpo += ["--set", "policy.max_completion_tokens=4096"]
    out = tmp_path / "policy-grpo"
    argv = ["--preset", "debug", "--policy-preset", "debug", *sets, "--stage", "grpo", *grpo]
    assert learn_main([*argv, "--model", str(fake_tool_lm), "--out", str(out), "--quiet"]) == 0
    meta = json.loads((out / META_FILE).read_text())
    assert meta["stage"] == "grpo"
    (step,) = [s for s in meta["log"] if "loss" in s]
    assert {"loss", "reward", "reward_std", "rewards/SttrlEpisode/mean"} <= set(step)
    # the rollouts: one group of 3 from the same instance and start, each rewarded with its episode's return
    (root,) = (tmp_path / "runs" / "policy-grpo").iterdir()
    rows = [json.loads(x) for x in (root / "rollouts.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and len({json.dumps(r["instance"]) for r in rows}) == 1 and all(r["step"] == 1 for r in rows)
    for row in rows:
        records = [json.loads(x) for x in (root / "rollouts" / row["run_id"] / TRAJECTORY).read_text().splitlines()]
        assert [r["action"] for r in records] == row["actions"] and {r["source"] for r in records} == {"grpo"}
        done = records and (records[-1]["action"] == "stop" or len(records) == 2)
        penalty = 0.0 if done else load_config("debug", policy_preset="debug").policy.invalid_json_penalty
        assert row["reward"] == pytest.approx(sum(r["reward"] for r in records) - penalty)
    assert sorted(r["actions"] for r in rows) == sorted(PLAN) and step["frac_reward_zero_std"] == 0.0
    assert step["reward"] == pytest.approx(sum(r["reward"] for r in rows) / 3, abs=1e-4) and step["reward_std"] > 0
    # the two rollouts that start with keep share that block: the second one took it from the block cache
    notes = []
    for row in rows:
        first = (root / "rollouts" / row["run_id"] / TRAJECTORY).read_text().splitlines()[0]
        notes.append(json.loads(first)["train"]["note"] if row["actions"][0] == "keep" else None)
    assert sorted("[cached block" in n for n in notes if n is not None) == [False, True]
    starts = {
        json.loads((root / "rollouts" / r["run_id"] / "run.json").read_text())["initial_weights_sha256"] for r in rows
    }
    assert len(starts) == 1  # the same starting state

    # the saved policy decides a judged episode through its tools
    from graph.run import main as run_main

    run = ["--preset", "debug", *sets, "--agent", "learned", "--model", str(out), "--thread-id", "grpo-1", "--quiet"]
    assert run_main(run) == 0
    run_dir = tmp_path / "runs" / "grpo-1"
    records = [json.loads(x) for x in (run_dir / TRAJECTORY).read_text().splitlines()]
    assert records and all(r["source"] == "learned" and r["rationale"].startswith("tool call ") for r in records)
    report = json.loads((run_dir / JUDGE_REPORT).read_text())  # judged (a policy that stops at once is not scored)
    assert report["wer"] is not None and report["checks"]["trajectory_consistent"]["passed"]


def test_the_rollout_class_as_trl_drives_it(make_config, tmp_path):
    cfg = make_config("env.max_actions=2", "env.instances.lr=[1e-4, 1e-2]")
    cls = rollout_class(cfg.env.actions)
    assert sorted(n for n in vars(cls) if not n.startswith("_")) == sorted(cfg.env.actions)
    assert cls.lr_up.__doc__.startswith("Learning rate x train.lr_factor.")
    a, b = cls(cfg, tmp_path / "r"), cls(cfg, tmp_path / "r")
    text = a.reset(prompt=[], instance=7, seed=0)
    assert "Step 1 of 2" in text and b.reset(prompt=[], instance=7, seed=0) == text  # one group, one start
    first = a.keep()
    assert "Block 1 trained: status ok" in first and "Step 2 of 2" in first
    assert "The episode has ended (budget)" in a.lr_down()
    with pytest.raises(SessionError, match="episode has ended"):
        a.keep()
    records = a.outcome.records  # the episode ended: scored and its model freed at once
    assert a._session.env is None and a.get_reward() == pytest.approx(sum(r["reward"] for r in records))
    assert b.get_reward() == pytest.approx(-cfg.policy.invalid_json_penalty)  # no tool called: the penalty
