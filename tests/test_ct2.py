"""CTranslate2 model.bin reader/writer and the Whisper <-> Hugging Face name mapping."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration

from sttrl.errors import ModelError
from sttrl.train.ct2_format import Ct2Model, bf16_to_float32, read_ct2, write_ct2
from sttrl.train.ct2_whisper import ct2_to_hf, expected_hf_keys, hf_to_ct2, whisper_config_from_ct2


def _s(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _var(name: str, dtype_id: int, arr: np.ndarray) -> bytes:
    raw = arr.tobytes()
    return (
        _s(name)
        + struct.pack("<B", arr.ndim)
        + struct.pack(f"<{arr.ndim}I", *arr.shape)
        + struct.pack("<BI", dtype_id, len(raw))
        + raw
    )


FIXTURE = {
    "a/f32": (0, np.arange(6, dtype="<f4").reshape(2, 3) / 3),
    "a/i8": (1, np.array([-128, -1, 0, 127], dtype="i1")),
    "a/i16": (2, np.array(-7, dtype="<i2")),
    "a/i32": (3, np.array([[1 << 30], [-5]], dtype="<i4")),
    "a/f16": (4, np.array([0.5, -2.25, 65504.0], dtype="<f2")),
    "a/bf16": (5, np.array([0x3F80, 0xC000], dtype="<u2")),  # 1.0, -2.0
}


def _fixture_bytes() -> bytes:
    body = b"".join(_var(n, i, a) for n, (i, a) in FIXTURE.items())
    return (
        struct.pack("<I", 6)
        + _s("TestSpec")
        + struct.pack("<II", 2, len(FIXTURE))
        + body
        + struct.pack("<I", 1)
        + _s("a/alias")
        + _s("a/f32")
    )


def test_hand_written_file_parses_exactly(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(_fixture_bytes())
    m = read_ct2(path)
    assert (m.binary_version, m.spec_name, m.spec_revision) == (6, "TestSpec", 2)
    assert list(m.variables) == list(FIXTURE)
    for name, (_, arr) in FIXTURE.items():
        assert m.variables[name].dtype == arr.dtype and m.variables[name].shape == arr.shape
        np.testing.assert_array_equal(m.variables[name], arr)
    assert m.aliases == {"a/alias": "a/f32"}
    np.testing.assert_array_equal(bf16_to_float32(m.variables["a/bf16"]), [1.0, -2.0])
    write_ct2(tmp_path / "again.bin", m)
    assert (tmp_path / "again.bin").read_bytes() == path.read_bytes()


@pytest.mark.parametrize("cut", [3, 10, 40, 100, -30, -1])
def test_truncated_file_names_file_and_offset(tmp_path: Path, cut: int) -> None:
    data = _fixture_bytes()
    path = tmp_path / "cut.bin"
    path.write_bytes(data[:cut])
    with pytest.raises(ModelError, match=r"cut\.bin at offset \d+: truncated"):
        read_ct2(path)


def test_garbage_and_trailing_bytes_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "junk.bin"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ModelError, match=r"junk\.bin at offset 0: unsupported binary version \d+ .*supports 6"):
        read_ct2(path)
    path.write_bytes(_fixture_bytes() + b"xx")
    with pytest.raises(ModelError, match="2 unexpected trailing bytes"):
        read_ct2(path)
    bad = bytearray(_fixture_bytes())
    first_dtype = 4 + len(_s("TestSpec")) + 8 + len(_s("a/f32")) + 1 + 8
    bad[first_dtype] = 9
    path.write_bytes(bytes(bad))
    with pytest.raises(ModelError, match=r"unknown dtype id 9 \(valid: 0 float32, .*5 bfloat16\)"):
        read_ct2(path)
    with pytest.raises(ModelError, match="dtype float64"):
        write_ct2(tmp_path / "x.bin", Ct2Model("S", 1, {"x": np.zeros(2)}))


def _tiny_whisper() -> WhisperForConditionalGeneration:
    torch.manual_seed(0)
    cfg = WhisperConfig(
        vocab_size=96,
        num_mel_bins=16,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_source_positions=50,
        max_target_positions=32,
        pad_token_id=90,
        bos_token_id=90,
        eos_token_id=90,
        decoder_start_token_id=91,
        suppress_tokens=[],
        begin_suppress_tokens=[],
    )
    model = WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # non-trivial biases and norms, so a swapped tensor shows
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def test_whisper_round_trip_gives_identical_tensors_and_logits(tmp_path: Path) -> None:
    model = _tiny_whisper()
    sd = model.state_dict()
    assert set(sd) == expected_hf_keys(2, 2)
    variables, aliases = hf_to_ct2(sd, num_heads=4)
    assert aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert not np.any(variables["encoder/layer_0/self_attention/linear_0/bias"][64:128])
    path = write_ct2(tmp_path / "model.bin", Ct2Model("WhisperSpec", 3, variables, aliases))
    back = read_ct2(path)
    out = ct2_to_hf(back.variables, back.aliases)
    assert set(out) == set(sd)
    for k, v in sd.items():
        assert torch.equal(out[k], v), k
    assert out["proj_out.weight"] is out["model.decoder.embed_tokens.weight"]

    cfg = whisper_config_from_ct2(
        back.variables,
        pad_token_id=90,
        bos_token_id=90,
        eos_token_id=90,
        decoder_start_token_id=91,
        suppress_tokens=[],
        begin_suppress_tokens=[],
    )
    for f in (
        "d_model",
        "encoder_layers",
        "decoder_layers",
        "encoder_attention_heads",
        "encoder_ffn_dim",
        "vocab_size",
        "num_mel_bins",
        "max_source_positions",
        "max_target_positions",
    ):
        assert getattr(cfg, f) == getattr(model.config, f), f
    clone = WhisperForConditionalGeneration(cfg).eval()
    clone.load_state_dict(out, strict=True)
    feats = torch.randn(2, 16, 100)
    dec = torch.tensor([[91, 3, 5, 7], [91, 8, 2, 1]])
    with torch.no_grad():
        a = model(input_features=feats, decoder_input_ids=dec).logits
        b = clone(input_features=feats, decoder_input_ids=dec).logits
    assert torch.equal(a, b)


def test_heads_come_from_param_file_or_table() -> None:
    variables, _ = hf_to_ct2(_tiny_whisper().state_dict(), num_heads=4)
    ids = dict(pad_token_id=90, bos_token_id=90, eos_token_id=90, decoder_start_token_id=91)
    assert whisper_config_from_ct2(variables, **ids).encoder_attention_heads == 4
    assert whisper_config_from_ct2(variables, num_heads=8, **ids).decoder_attention_heads == 8
    no_heads = {k: v for k, v in variables.items() if not k.endswith("num_heads")}
    with pytest.raises(ModelError, match="cannot determine attention heads for d_model 64"):
        whisper_config_from_ct2(no_heads, **ids)


def test_missing_unexpected_and_bad_variables_are_named() -> None:
    variables, aliases = hf_to_ct2(_tiny_whisper().state_dict())
    missing = dict(variables)
    del missing["decoder/layer_1/attention/linear_1/weight"]
    with pytest.raises(ModelError, match=r"missing \['decoder/layer_1/attention/linear_1/weight'\]; unexpected none"):
        ct2_to_hf(missing, aliases)
    extra = dict(variables, **{"decoder/layer_0/mystery/weight": np.zeros(3, np.float32)})
    with pytest.raises(ModelError, match=r"unexpected \['decoder/layer_0/mystery/weight'\]"):
        ct2_to_hf(extra, aliases)
    with pytest.raises(ModelError, match="unexpected aliases"):
        ct2_to_hf(variables, {**aliases, "x": "y"})
    kbias = dict(variables)
    kbias["encoder/layer_0/self_attention/linear_0/bias"] = np.ones(192, np.float32)
    with pytest.raises(ModelError, match="k part of the fused bias is non-zero"):
        ct2_to_hf(kbias, aliases)
    relu = dict(variables, **{"decoder/activation": np.asarray(0, np.int8)})
    with pytest.raises(ModelError, match="decoder/activation = 0: Hugging Face Whisper needs 3"):
        ct2_to_hf(relu, aliases)
    sd = _tiny_whisper().state_dict()
    del sd["model.encoder.layers.1.fc2.bias"]
    with pytest.raises(ModelError, match=r"missing \['model.encoder.layers.1.fc2.bias'\]"):
        hf_to_ct2(sd)


def test_half_precision_weights_convert_to_float32() -> None:
    variables, aliases = hf_to_ct2(_tiny_whisper().state_dict(), dtype=np.float16)
    out = ct2_to_hf(variables, aliases)
    assert all(v.dtype == torch.float32 for v in out.values())
    bits = (variables["encoder/conv1/weight"].astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    bf = ct2_to_hf({**variables, "encoder/conv1/weight": bits}, aliases)["model.encoder.conv1.weight"]
    np.testing.assert_allclose(bf.numpy(), variables["encoder/conv1/weight"].astype(np.float32), rtol=1e-2)
