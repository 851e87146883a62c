"""The hub loaders on local directories in the real layouts: AfriVoice (webm/Opus in tar.xz) and column datasets."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soxr

from sttrl.config import DataConfig, HubDataConfig
from sttrl.data import build_speech_data, load_audio, load_hidden_split
from sttrl.data import hub as hub_module
from sttrl.data.synth import SynthSpec, synthesize
from sttrl.errors import DataError, HiddenSplitAccessError

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")

# (domain, split) -> sentences; one clip per sentence. "Ndiyo." is under a second and must be filtered out.
CLIPS = {
    ("health", "train"): ["Daktari alipima shinikizo la damu jana.", "Mgonjwa anakohoa sana usiku.", "Ndiyo."],
    ("agriculture", "train"): ["Wakulima walipanda mahindi mwezi uliopita.", "Bei ya mbolea imepanda sana."],
    ("health", "dev"): ["Muuguzi atatoa chanjo kesho asubuhi."],
    ("agriculture", "dev"): ["Mvua kubwa iliharibu mazao kijijini."],
    ("government", "test"): ["Bunge lilipitisha sheria mpya ya kodi.", "Serikali ya kaunti itajenga barabara."],
}


def _webm_opus(audio_16k: np.ndarray) -> bytes:
    """Encode like AfriVoice: Opus in webm at 48 kHz (PyAV bundles FFmpeg)."""
    import av

    audio = soxr.resample(audio_16k, 16000, 48000).astype(np.float32)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="webm") as container:
        stream = container.add_stream("libopus", rate=48000, layout="mono")
        frame = av.AudioFrame.from_ndarray(audio[None, :], format="flt", layout="mono")
        frame.sample_rate = 48000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def _make_afrivoice(root: Path, voices_cache: Path) -> dict[str, np.ndarray]:
    """Write ``<domain>_swahili_<split>/manifest_1.jsonl`` + ``audio/audio_1.tar.xz``; return source audio by key."""
    sources: dict[str, np.ndarray] = {}
    for (domain, split), sentences in CLIPS.items():
        folder = root / f"{domain}_swahili_{split}"
        (folder / "audio").mkdir(parents=True)
        lines = []
        with tarfile.open(folder / "audio" / "audio_1.tar.xz", mode="w:xz") as tar:
            for i, text in enumerate(sentences):
                key = f"{domain[:3]}{split}{i:03d}"
                wav = synthesize(SynthSpec(text, "sw+m2", 165, 50, None, 0), voices_cache).path
                audio = load_audio(wav)
                sources[key] = audio
                data = _webm_opus(audio)
                member = tarfile.TarInfo(f"audio_1/{key}.webm")
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
                lines.append(
                    {
                        "audio_filepath": f"recordings/sw/{key}.webm",
                        "transcription": text,
                        "normalized_transcription": text.lower(),
                        "key": key,
                        "duration": audio.size / 16000,
                        "category": domain,
                        "locale": "sw_KE",
                    }
                )
        (folder / "manifest_1.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return sources


@pytest.fixture(scope="module")
def afrivoice(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("afrivoice")
    sources = _make_afrivoice(root / "repo", root / "voices")
    return root / "repo", sources


def _cfg(local_dir: Path, cache: Path, **hub: object) -> DataConfig:
    return DataConfig(
        source="hub", cache_dir=cache, workers=2, hub=HubDataConfig(layout="afrivoice", local_dir=local_dir, **hub)
    )  # type: ignore[arg-type]


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    n = min(a.size, b.size)
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


def test_afrivoice_local_layout_is_decoded(afrivoice: tuple[Path, dict[str, np.ndarray]], tmp_path: Path) -> None:
    repo, sources = afrivoice
    cfg = _cfg(repo, tmp_path / "cache")
    data = build_speech_data(cfg, progress=False)
    train, validation = data.split("train"), data.split("validation")
    assert sorted(u.uid for u in train) == [
        "agriculture-agrtrain000",
        "agriculture-agrtrain001",
        "health-heatrain000",
        "health-heatrain001",
    ]
    assert sorted(u.uid for u in validation) == ["agriculture-agrdev000", "health-headev000"]
    for u in train + validation:
        source = sources[u.uid.split("-", 1)[1]]
        assert abs(u.duration - source.size / 16000) < 0.03
        decoded = load_audio(u.audio_path)
        assert _correlation(decoded, source) > 0.9
        assert u.text in {t for texts in CLIPS.values() for t in texts}
    with pytest.raises(HiddenSplitAccessError):
        data.split("test")  # type: ignore[arg-type]
    assert not list((tmp_path / "cache").rglob("government_swahili_test")), "build_speech_data touched the hidden split"
    manifest = json.loads(data.manifest_path.read_text())
    assert manifest["splits"]["hidden"]["listed"] is False

    hidden = load_hidden_split(cfg, progress=False)
    assert sorted(u.uid for u in hidden) == ["government-govtest000", "government-govtest001"]
    assert all(_correlation(load_audio(u.audio_path), sources[u.uid.split("-", 1)[1]]) > 0.9 for u in hidden)


def test_afrivoice_second_build_reads_the_cache(
    afrivoice: tuple[Path, dict[str, np.ndarray]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, _ = afrivoice
    cfg = _cfg(repo, tmp_path / "cache")
    first = build_speech_data(cfg, progress=False)

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(hub_module, "decode_bytes", no_decoding)
    second = build_speech_data(cfg, progress=False)
    assert [u.sha256 for u in second.split("train")] == [u.sha256 for u in first.split("train")]


def test_afrivoice_missing_field_folder_and_archive(
    afrivoice: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    repo, _ = afrivoice
    broken = tmp_path / "broken"
    shutil.copytree(repo, broken)
    manifest = broken / "health_swahili_train" / "manifest_1.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    del rows[1]["transcription"]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"health_swahili_train/manifest_1.jsonl:2: missing field 'transcription'"):
        build_speech_data(_cfg(broken, tmp_path / "c1"), progress=False)

    with pytest.raises(
        DataError, match=r"no education_swahili_train/manifest_N.jsonl .*folders present: agriculture_swahili_dev"
    ):
        build_speech_data(
            _cfg(repo, tmp_path / "c2").model_copy(update={"train_domains": ["education"]}), progress=False
        )

    (broken / "government_swahili_test" / "audio" / "audio_1.tar.xz").unlink()
    with pytest.raises(DataError, match=r"has no audio archive government_swahili_test/audio/audio_1.tar.xz"):
        load_hidden_split(_cfg(broken, tmp_path / "c3"), progress=False)


def test_missing_audio_rows_are_reported_on_every_load_and_strict_makes_them_an_error(
    afrivoice: tuple[Path, dict[str, np.ndarray]], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    repo, _ = afrivoice
    gappy = tmp_path / "gappy"
    shutil.copytree(repo, gappy)
    manifest = gappy / "health_swahili_train" / "manifest_1.jsonl"
    row = {
        "audio_filepath": "recordings/sw/heatrain999.webm",
        "transcription": "Hakuna sauti hapa kabisa.",
        "key": "heatrain999",
        "duration": 2.0,
        "category": "health",
        "locale": "sw_KE",
    }
    manifest.write_text(manifest.read_text() + json.dumps(row) + "\n")
    cfg = _cfg(gappy, tmp_path / "cache")
    for _ in range(2):  # decoded, then from the cache: reported both times
        data = build_speech_data(cfg, progress=False)
        err = capfd.readouterr().err
        assert "1 manifest row(s) have no audio in their archive, first: health-heatrain999" in err, err
        assert "health-heatrain999" not in {u.uid for u in data.split("train") + data.split("validation")}
    with pytest.raises(
        DataError, match=r"1 manifest row\(s\) have no audio .* health-heatrain999 .*data.hub.strict=true"
    ):
        build_speech_data(_cfg(gappy, tmp_path / "cache", strict=True), progress=False)


def test_replaced_archive_is_not_served_from_the_cache(
    afrivoice: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    repo, _ = afrivoice
    copy = tmp_path / "copy"
    shutil.copytree(repo, copy)
    cfg = _cfg(copy, tmp_path / "cache")
    build_speech_data(cfg, progress=False)
    (copy / "health_swahili_train" / "audio" / "audio_1.tar.xz").write_bytes(b"not an xz archive any more")
    with pytest.raises(DataError, match=r"health_swahili_train/audio/audio_1.tar.xz: not a readable .tar.xz archive"):
        build_speech_data(cfg, progress=False)


# ------------------------------------------------------------------ column layout


def _column_dataset(root: Path, voices_cache: Path) -> None:
    import datasets

    texts = {
        "train": [
            ("health", "Dawa hii inasaidia sana."),
            ("agriculture", "Wakulima wanavuna mahindi leo."),
            ("government", "Rais atahutubia wananchi kesho."),
        ],
        "dev": [("health", "Mtoto ana homa kali leo."), ("agriculture", "Ng'ombe wanakula majani shambani.")],
        "test": [("government", "Wabunge wanajadili bajeti mpya.")],
    }
    for split, rows in texts.items():
        audio = []
        for _domain, text in rows:
            wav = synthesize(SynthSpec(text, "sw+f3", 170, 45, None, 0), voices_cache).path
            audio.append({"bytes": wav.read_bytes(), "path": wav.name})
        ds = datasets.Dataset.from_dict(
            {"audio": audio, "sentence": [t for _, t in rows], "domain": [d for d, _ in rows]}
        )
        ds.cast_column("audio", datasets.Audio(decode=False)).to_parquet(str(root / f"{split}.parquet"))


def test_columns_layout_from_local_parquet(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    root = tmp_path / "columns"
    root.mkdir()
    _column_dataset(root, tmp_path / "voices")
    hub = HubDataConfig(
        layout="columns", local_dir=root, audio_column="audio", text_column="sentence", domain_column="domain"
    )
    cfg = DataConfig(source="hub", cache_dir=tmp_path / "cache", hub=hub)
    data = build_speech_data(cfg, progress=False)
    train = data.split("train")
    assert sorted(u.domain for u in train) == ["agriculture", "health"], "train must hold train domains only"
    assert len(data.split("validation")) == 2
    assert all(1.0 < u.duration < 6.0 for u in train)
    hidden = load_hidden_split(cfg, progress=False)
    assert [u.text for u in hidden] == ["Wabunge wanajadili bajeti mpya."]

    missing = cfg.model_copy(update={"hub": hub.model_copy(update={"text_column": "transcription"})})
    with pytest.raises(
        DataError, match=r"no column 'transcription' \(data.hub.text_column\); columns present: audio, sentence, domain"
    ):
        build_speech_data(missing, progress=False)
