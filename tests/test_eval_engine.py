"""Evaluation engines: the registry finds an engine added as one module (validated by config, used by
evaluate_with) without importing torch to list them; CTranslate2 agrees with transformers, conversion of the
current weights is exact, bad names are config errors, the converted model is cached only while the weights are
unchanged, and an episode evaluated with ct2 resumes after SIGKILL with the same numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sttrl.eval.engines as engines
from sttrl.data import build_speech_data
from sttrl.errors import ConfigError
from sttrl.eval.decode import max_new_tokens, transcribe
from sttrl.eval.engines import evaluate_with
from sttrl.eval.engines.ct2 import ct2_files, load_ct2, weights_key
from sttrl.rundir import JUDGE_REPORT, RUN_RECORD
from sttrl.train.ct2_format import read_ct2
from sttrl.train.ct2_whisper import ct2_to_hf
from sttrl.train.features import FeatureStore, feature_cache_dir
from sttrl.train.model import load_model

CPU = torch.device("cpu")


def _stack(cfg):
    data = build_speech_data(cfg.data, progress=False)
    loaded = load_model(cfg.model, cfg.data.cache_dir, CPU, seed=cfg.run.seed, progress=False)
    utts = data.split("validation") + data.split("train")[:10]
    store = FeatureStore(loaded, utts, cfg.model.max_target_tokens, feature_cache_dir(cfg))
    return loaded, store


def _perturb(model: torch.nn.Module, seed: int = 0) -> None:
    """Move the weights off their initialization, as training does (deterministically)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.02)


FAKE_ENGINE = """
from sttrl.eval.decode import evaluate
from sttrl.eval.engines import Engine


def _silent(features, max_new_tokens):  # decodes nothing: every hypothesis is empty
    return [[] for _ in range(features.shape[0])]


def _evaluate(cfg, store, device, per_utterance=False):
    return evaluate(store, device, batch_size=cfg.train.eval_batch_size, decode=_silent, engine="fake_silent",
                    per_utterance=per_utterance)


ENGINE = Engine("fake_silent", "a test double that decodes nothing", _evaluate)
"""


def test_an_engine_added_as_one_module_is_validated_and_used(make_config, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"train\.eval_engine: unknown evaluation engine; valid: ct2, transformers"):
        make_config("train.eval_engine=fake_silent")
    (tmp_path / "fake_silent.py").write_text(FAKE_ENGINE)  # what adding an engine is: one module in the package
    monkeypatch.setattr(engines, "__path__", [*engines.__path__, str(tmp_path)])
    try:
        assert engines.names() == ["ct2", "fake_silent", "transformers"]
        cfg = make_config("train.eval_engine=fake_silent")
        assert engines.engine_label(cfg, CPU) == "fake_silent"
        _, store = _stack(cfg)
        res = evaluate_with(cfg, store, CPU)
        assert (res.engine, res.wer, res.n) == ("fake_silent", 1.0, len(store))  # empty hypotheses: all words missed
        assert evaluate_with(cfg, store, CPU, "transformers").engine == "transformers"
    finally:
        sys.modules.pop("sttrl.eval.engines.fake_silent", None)


def test_listing_and_validating_engines_imports_no_torch():
    code = (
        "import sys; from sttrl.config import load_config; from sttrl.eval.engines import names; "
        "cfg = load_config('debug', overrides=['train.eval_engine=ct2']); "
        "assert names() == ['ct2', 'transformers'], names(); "
        "assert 'torch' not in sys.modules and 'ctranslate2' not in sys.modules, 'torch loaded'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bad_engine_and_compute_type_are_config_errors(make_config):
    with pytest.raises(ConfigError, match=r"train\.eval_engine"):
        make_config("train.eval_engine=onnx")
    with pytest.raises(ConfigError, match=r"train\.eval_compute_type"):
        make_config("train.eval_compute_type=int4")
    cfg = make_config("train.eval_engine=ct2", "train.eval_compute_type=float16")
    loaded, store = _stack(cfg)
    with pytest.raises(ConfigError, match=r"train\.eval_compute_type=float16 is not supported .* on cpu"):
        evaluate_with(cfg, store, CPU)


@pytest.mark.exclusive  # decodes and converts in the test itself (tests/conftest.py)
def test_conversion_of_current_weights_is_exact(make_config, tmp_path):
    cfg = make_config()
    loaded, _ = _stack(cfg)
    _perturb(loaded.model)
    files = ct2_files(loaded)
    (tmp_path / "model.bin").write_bytes(files["model.bin"])
    ct2 = read_ct2(tmp_path / "model.bin")
    back = ct2_to_hf(ct2.variables, ct2.aliases)
    state = loaded.model.state_dict()
    assert set(back) == set(state)
    for name, tensor in state.items():
        assert torch.equal(back[name], tensor), name
    vocab = json.loads(files["vocabulary.json"])
    assert len(vocab) == loaded.model.config.vocab_size
    assert vocab[loaded.prefix_ids[0]] == "<|startoftranscript|>"


@pytest.mark.exclusive  # decodes with both engines in the test itself (tests/conftest.py)
@pytest.mark.parametrize("source", ["builtin", "pretrained"])
def test_engines_agree_token_for_token(make_config, source):
    over = (
        []
        if source == "builtin"
        else [
            "model.source=pretrained",
            "model.name=whisper-tiny-en",
            "model.language=null",
            "model.max_target_tokens=96",
        ]
    )
    cfg = make_config(*over, "train.eval_engine=ct2")
    loaded, store = _stack(cfg)
    if source == "builtin":
        _perturb(loaded.model, 1)  # a random init decodes one repeated token; perturbed weights vary more
    idx = list(range(len(store)))
    max_new = max_new_tokens(store)
    ct = load_ct2(loaded, CPU, "float32", 1)
    feats = store.features(idx[:8])
    ids_ct2 = ct.decode(feats, max_new)
    with torch.inference_mode():
        ids_hf = loaded.model.generate(
            input_features=feats, max_new_tokens=max_new, num_beams=1, do_sample=False, **loaded.generate_kwargs
        )
    eos = loaded.model.generation_config.eos_token_id
    for a, b in zip(ids_ct2, ids_hf.tolist(), strict=True):
        n = len(loaded.prefix_ids)
        b = b[n:] if b[:n] == loaded.prefix_ids else b  # transformers returns the prompt when it is forced
        b = b[: b.index(eos)] if eos in b else b
        assert a == b
    if source == "pretrained":  # real weights: varied transcripts (a tiny random model repeats one token)
        assert len({tuple(a) for a in ids_ct2}) > 1, "every utterance decodes the same"
    hf = transcribe(store, idx, 4, max_new, CPU)
    ours = transcribe(store, idx, 4, max_new, CPU, ct.decode)
    assert ours == hf
    a, b = evaluate_with(cfg, store, CPU, "transformers"), evaluate_with(cfg, store, CPU)
    assert (a.wer, a.cer, a.engine) == (b.wer, b.cer, "transformers") and b.engine == "ct2/float32"


@pytest.mark.exclusive  # decodes and converts in the test itself (tests/conftest.py)
def test_converted_model_is_cached_while_weights_are_unchanged(make_config):
    cfg = make_config()
    loaded, _ = _stack(cfg)
    first = load_ct2(loaded, CPU, "float32", 1)
    again = load_ct2(loaded, CPU, "float32", 1)
    assert again.whisper is first.whisper and again.convert_seconds < first.convert_seconds
    key = weights_key(loaded.model)
    params = [p for p in loaded.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, fused=True)  # the trainer's: it does not bump tensor versions
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    assert weights_key(loaded.model) != key
    assert load_ct2(loaded, CPU, "float32", 1).whisper is not first.whisper
    int8 = load_ct2(loaded, CPU, "int8", 1)
    assert int8.compute_type == "int8" and int8.convert_seconds > 0


# ----- kill and resume with the ct2 engine ------------------------------------------------------
EVAL_CHILD = r"""
import sys, time
import sttrl.eval.engines.ct2 as E
real = E.Ct2Whisper.decode
calls = [0]
def decode(self, features, max_new_tokens):
    calls[0] += 1
    if sys.argv[1] == "slow-eval" and calls[0] == 3:  # block 0 (setup), block 1, then block 2's evaluation
        print("MARK evaluating", flush=True)
        time.sleep(600)
    return real(self, features, max_new_tokens)
E.Ct2Whisper.decode = decode
from graph.run import main
sys.exit(main(sys.argv[2:]))
"""


def test_ct2_episode_resumes_after_kill_with_the_same_numbers(data_cache, tmp_path):
    import test_graph_resume as R

    class EvalChild(R.Child):
        def __init__(self, mode: str, args: list[str], cwd: Path) -> None:
            self.proc = subprocess.Popen(
                [sys.executable, "-u", "-c", EVAL_CHILD, mode, *args],
                cwd=cwd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
                env=R.child_env(),
            )
            self.lines = []
            self.reader = R.threading.Thread(target=self._read, daemon=True)
            self.reader.start()

    out = tmp_path / "runs"
    ct2 = ["--set", "train.eval_engine=ct2"]
    EvalChild("plain", R.cli_args(data_cache, out, "ref") + ct2, cwd=tmp_path).finish()
    c = EvalChild("slow-eval", R.cli_args(data_cache, out, "crashy") + ct2, cwd=tmp_path)
    c.wait_for(lambda: "MARK evaluating" in c.text)
    c.kill()
    assert R.steps_written(out / "crashy") == [1]
    text = EvalChild("plain", ["--thread-id", "crashy", "--set", f"run.out_dir={out}"], cwd=tmp_path).finish()
    assert "resumes at" in text
    ref, got = R.outcome(out / "ref"), R.outcome(out / "crashy")
    for key in ("steps", "decisions", "wer", "losses", "judge", "final_sha256"):
        assert got[key] == ref[key], key
    assert json.loads((out / "crashy" / RUN_RECORD).read_text())["eval_engine"] == "ct2/float32"
    assert json.loads((out / "crashy" / JUDGE_REPORT).read_text())["engine"] == "ct2/float32"
    evals = sorted((out / "crashy" / "evals").glob("block-*.json"))
    assert evals and all(json.loads(p.read_text())["engine"] == "ct2/float32" for p in evals)
