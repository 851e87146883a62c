"""The feature store's disk cache and collator, and the trainer's labelled-positions loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sttrl.data import build_speech_data
from sttrl.train.features import FeatureStore, extractor_key, feature_cache_dir
from sttrl.train.model import load_model
from sttrl.train.trainer import Trainer


@pytest.fixture
def stack(make_config):
    cfg = make_config()
    data = build_speech_data(cfg.data, progress=False)
    loaded = load_model(cfg.model, cfg.data.cache_dir, seed=0)
    return cfg, data.split("train")[:6], loaded


def test_disk_cache_matches_memory_and_is_reused(stack, tmp_path, monkeypatch):
    cfg, utts, loaded = stack
    memory = FeatureStore(loaded, utts, 32)
    disk = FeatureStore(loaded, utts, 32, tmp_path / "features")
    idx = [3, 0, 3, 5]  # a repeated index (the epoch boundary of a small split) is computed once
    expected = memory.features(idx)
    assert torch.equal(disk.features(idx), expected)
    files = sorted((tmp_path / "features" / extractor_key(loaded.processor.feature_extractor)).rglob("*.npy"))
    assert len(files) == 3 and not memory.cache_dir
    assert not memory._features.keys() - {0, 3, 5} and not disk._features  # the disk store keeps nothing in memory

    again = FeatureStore(loaded, utts, 32, tmp_path / "features")
    monkeypatch.setattr(again, "_compute", lambda _: pytest.fail("features recomputed despite the disk cache"))
    assert torch.equal(again.features(idx), expected)


def test_a_torn_cache_file_is_recomputed(stack, tmp_path):
    _cfg, utts, loaded = stack
    store = FeatureStore(loaded, utts, 32, tmp_path / "features")
    good = store.features([1])
    path = store._path(1)
    path.write_bytes(path.read_bytes()[:100])  # what a crash before the data reached the disk could leave
    assert torch.equal(FeatureStore(loaded, utts, 32, tmp_path / "features").features([1]), good)
    np.save(path, np.zeros((2, 2), np.float32))  # wrong shape: another extractor's file at this path
    assert torch.equal(FeatureStore(loaded, utts, 32, tmp_path / "features").features([1]), good)


def test_other_extractor_settings_use_another_directory(stack):
    _cfg, _utts, loaded = stack
    fe = loaded.processor.feature_extractor
    key = extractor_key(fe)
    old = fe.n_samples
    try:
        fe.n_samples = old // 2
        assert extractor_key(fe) != key
    finally:
        fe.n_samples = old


def test_labelled_positions_loss_equals_whisper_loss(stack):
    cfg, utts, loaded = stack
    store = FeatureStore(loaded, utts, cfg.model.max_target_tokens, feature_cache_dir(cfg))
    batch = store.batch([0, 1, 2, 3])
    assert torch.equal(batch.labels.reshape(-1)[batch.label_positions], batch.label_targets)
    assert int((batch.labels != -100).sum()) == len(batch.label_positions)
    trainer = Trainer(loaded, store, cfg.train, 0, torch.device("cpu"))
    loaded.model.eval()
    with torch.no_grad():
        ours = trainer._loss(batch)
        theirs = loaded.model(
            input_features=batch.input_features, decoder_input_ids=batch.decoder_input_ids, labels=batch.labels
        ).loss
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_transcripts_come_back_in_the_order_asked_whatever_the_batching(stack, monkeypatch):
    """transcribe() batches longest audio first; each transcript must still land at its utterance."""
    from sttrl.eval.decode import transcribe

    _cfg, utts, loaded = stack
    store = FeatureStore(loaded, utts, 32)
    assert len({u.duration for u in utts}) == len(utts)  # the length sort really reorders
    means = [float(store.features([i])[0].mean()) for i in range(len(utts))]

    def fake_generate(input_features, **_kw):  # a transcript that names the utterance it was decoded from
        return torch.tensor(
            [[min(range(len(means)), key=lambda i: abs(means[i] - float(f.mean())))] for f in input_features]
        )

    monkeypatch.setattr(loaded.model, "generate", fake_generate)
    monkeypatch.setattr(
        loaded.processor.tokenizer, "batch_decode", lambda ids, **_kw: [f"utt{int(row[0])}" for row in ids]
    )
    idx = list(range(len(utts)))
    assert transcribe(store, idx, 4, 6, torch.device("cpu")) == [f"utt{i}" for i in idx]
    assert transcribe(store, idx[::-1], 3, 6, torch.device("cpu")) == [f"utt{i}" for i in idx[::-1]]
    assert transcribe(store, [2, 2, 0], 2, 6, torch.device("cpu")) == ["utt2", "utt2", "utt0"]
