"""Shared fixtures: one synthesized debug corpus per test session, configs that write under tmp dirs, a tiny
random causal LM saved like any model directory."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
import torch

from sttrl.config import Config, load_config

torch.set_num_threads(2)

# The judge key and the hidden-split access log live outside run directories (sttrl.judge.integrity): tests use a
# folder of their own, never the developer's ~/.local/share/sttrl; subprocesses inherit it.
# The key is fixed (a file, as on a user's machine): the synthetic hidden sentences are salted by it, so a random
# key per session gave a different hidden domain each run, and about 1 in 12 keys left the debug preset's hidden
# dev part empty (measured; CI failed three tuning tests on one such key). Tests that need another key set
# STTRL_JUDGE_KEY themselves.
os.environ["STTRL_HOME"] = tempfile.mkdtemp(prefix="sttrl-home-")
os.environ.pop("STTRL_JUDGE_KEY", None)
(Path(os.environ["STTRL_HOME"]) / "judge.key").write_text("sttrl-test-suite-judge-key-0123456789abcdef\n")
os.chmod(Path(os.environ["STTRL_HOME"]) / "judge.key", 0o600)


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


TINY_LM_ACTIONS = ("keep", "lr_up", "lr_down", "batch_up", "batch_down", "freeze_more", "freeze_less", "stop")


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialized 2-layer Llama with a byte-level BPE tokenizer, saved like any model dir."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny-lm")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [json.dumps({"action": a, "rationale": "the loss fell and the WER is 0.9"}) for a in TINY_LM_ACTIONS] * 4
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>")
    fast.save_pretrained(out)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.eos_token_id,
        bos_token_id=fast.eos_token_id,
    )
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out
