"""Model sources share one loader; the window option; the declared normalizer and error rates."""

from __future__ import annotations

import pytest
import torch

from sttrl.config import load_config
from sttrl.errors import ModelError
from sttrl.eval.decode import error_rates, normalize_text
from sttrl.train.model import load_model, set_frozen_layers


def test_local_and_hub_sources_load_through_from_pretrained(tmp_path, data_cache):
    cfg = load_config("debug")
    built = load_model(cfg.model, data_cache, seed=3)
    saved = tmp_path / "saved"
    built.model.save_pretrained(saved)
    built.processor.save_pretrained(saved)
    for source in ("local", "hub"):  # a hub id and a local directory go through the same from_pretrained call
        mcfg = cfg.model.model_copy(update={"source": source, "name": str(saved)})
        again = load_model(mcfg, data_cache)
        for (k, a), b in zip(built.model.state_dict().items(), again.model.state_dict().values(), strict=True):
            assert torch.equal(a, b), k
        assert again.prefix_ids == built.prefix_ids
    with pytest.raises(ModelError, match="no config.json"):
        load_model(cfg.model.model_copy(update={"source": "local", "name": str(tmp_path / "nope")}), data_cache)


def test_window_is_shortened_consistently(data_cache):
    cfg = load_config("debug", overrides=["model.window_seconds=4"])
    lm = load_model(cfg.model, data_cache)
    assert lm.model.config.max_source_positions == 200
    assert lm.processor.feature_extractor.chunk_length == 4
    feats = lm.processor.feature_extractor([torch.zeros(16000).numpy()], sampling_rate=16000, return_tensors="pt")
    assert feats.input_features.shape[-1] == 400
    lm.model.generate(input_features=feats.input_features, max_new_tokens=2)


def test_pretrained_window_option(data_cache):
    cfg = load_config("whisper-tiny-en", overrides=["model.window_seconds=8"])
    lm = load_model(cfg.model, data_cache)
    assert lm.model.config.max_source_positions == 400
    assert lm.model.model.encoder.embed_positions.weight.shape[0] == 400
    assert lm.encoder_layers == 4
    set_frozen_layers(lm.model, 4)
    assert not any(p.requires_grad for p in lm.model.model.encoder.parameters())
    set_frozen_layers(lm.model, 0)
    assert all(p.requires_grad for n, p in lm.model.model.encoder.named_parameters() if "embed_positions" not in n)
    with pytest.raises(ValueError, match="out of range"):
        set_frozen_layers(lm.model, 5)


def test_normalizer_and_error_rates():
    assert normalize_text("Ng'ombe, WANAKULA nyasi!  'Leo'") == "ng'ombe wanakula nyasi leo"
    wer, cer = error_rates(["mama anapika chakula"], ["Mama anapika chakula."])
    assert wer == 0.0 and cer == 0.0
    wer, _ = error_rates(["mama anapika chakula"], [""])
    assert wer == 1.0
    wer, _ = error_rates(["a b"], ["a b c d e f"])
    assert wer == 2.0  # insertions make WER exceed 1 (a looping decoder)
