"""Corpus, synthesis, splits and the SpeechData object (synthetic source)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sttrl.config import DataConfig
from sttrl.data import (
    DOMAINS,
    SpeechData,
    build_general_data,
    build_speech_data,
    check_disjoint,
    generate_sentences,
    grammar,
    load_audio,
    load_hidden_split,
    synth,
    synthetic,
    validate_voices,
    vocabulary_overlap,
)
from sttrl.data.corpus import templates, vocabulary, words
from sttrl.data.splits import is_validation, read_manifest
from sttrl.errors import DataError, HiddenSplitAccessError, IntegrityError, SystemDependencyError
from sttrl.io import sha256_text

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng not installed (apt-get install espeak-ng)"
)


# ------------------------------------------------------------------ corpus


@pytest.mark.parametrize("domain", DOMAINS)
def test_corpus_500_distinct_sentences_per_domain(domain: str) -> None:
    sentences = generate_sentences(domain, 500, seed=0)
    assert len(sentences) == 500
    assert len({s.lower() for s in sentences}) == 500
    assert all(4 <= len(words(s)) <= 14 for s in sentences)
    assert not any(ch.isdigit() for s in sentences for ch in s), "numbers must be spelled out"
    assert generate_sentences(domain, 500, seed=0) == sentences, "not deterministic"
    assert generate_sentences(domain, 50, seed=1) != sentences[:50]
    assert len(templates(domain)) >= 40
    assert len(vocabulary(sentences)) >= 500


def test_government_vocabulary_overlap_and_own_nouns() -> None:
    train = generate_sentences("health", 500, 0) + generate_sentences("agriculture", 500, 0)
    government = generate_sentences("government", 500, 0)
    overlap = vocabulary_overlap(government, train)
    print(f"\ngovernment running words found in health+agriculture vocabulary: {overlap:.1%}")
    assert overlap >= 0.70
    own = vocabulary(government) - vocabulary(train)
    assert {"serikali", "bunge", "kaunti", "wizara", "sheria", "kodi", "uchaguzi"} <= own
    assert vocabulary_overlap(train[:200], train) == 1.0


def test_grammar_agreement() -> None:
    assert grammar.conjugate("panda", "2", "pres") == "wanapanda"
    assert grammar.conjugate("ku-la", "1", "past") == "alikula"
    assert grammar.conjugate("ku-la", "1", "hab") == "hula"
    assert grammar.conjugate("enda", "3s", "negpast") == "hakwenda"
    assert grammar.conjugate("panda", "1s", "negpres") == "sipandi"
    assert grammar.conjugate("jibu", "2", "subj") == "wajibu"
    assert grammar.conjugate("enda", "2p", "subj") == "mwende"
    assert grammar.conjugate("toa", "9", "fut") == "itatoa"
    assert grammar.infinitive("ku-nywa") == "kunywa"
    assert grammar.number_words(2500) == "elfu mbili mia tano"
    assert grammar.number_words(35, "2") == "thelathini na watano"
    assert grammar.number_words(21, "2") == "ishirini na mmoja"
    assert grammar.number_words(3, "4") == "mitatu"
    assert grammar.number_words(200, "2") == "mia mbili"
    assert grammar.adjective("pya", "5") == "jipya"
    with pytest.raises(ValueError):
        grammar.conjugate("panda", "99", "pres")


def test_unknown_domain_and_general_only_for_pretraining() -> None:
    with pytest.raises(DataError, match="valid: health, agriculture, government, general"):
        generate_sentences("sports", 5)
    with pytest.raises(DataError, match="pretraining only"):
        synthetic.check_domains(DataConfig(train_domains=["general", "health"]))


# ------------------------------------------------------------------ synthesis


@needs_espeak
def test_voice_validation() -> None:
    validate_voices(["sw", "sw+m1", "sw+f5", "sw+klatt3"])
    for bad in ["sw+nonexistent", "xx", "sw+male1"]:
        with pytest.raises(DataError, match="unknown espeak-ng voice") as err:
            validate_voices([bad])
        assert repr(bad) in str(err.value)


def test_missing_espeak_is_a_system_dependency_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synth.shutil, "which", lambda name: None)
    with pytest.raises(SystemDependencyError, match="apt-get install espeak-ng"):
        synth.espeak_binary()


@needs_espeak
def test_noise_is_added_at_the_requested_snr(tmp_path: Path) -> None:
    clean = synth.synthesize(synth.SynthSpec("Habari za asubuhi, mama.", "sw", 160, 50, None, 0), tmp_path)
    noisy = synth.synthesize(synth.SynthSpec("Habari za asubuhi, mama.", "sw", 160, 50, 20.0, 0), tmp_path)
    assert clean.path != noisy.path
    a, b = load_audio(clean.path), load_audio(noisy.path)
    snr = 10 * np.log10(np.mean(a**2) / np.mean((b - a) ** 2))
    assert 18.5 < snr < 21.5


# ------------------------------------------------------------------ build, cache, splits


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[DataConfig, SpeechData, SpeechData]:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    cache = tmp_path_factory.mktemp("data-cache")
    cfg = DataConfig(sentences_per_domain=12, cache_dir=cache, workers=2, max_hidden_utterances=6)
    first = build_speech_data(cfg, progress=False)
    second = build_speech_data(cfg, progress=False)
    return cfg, first, second


def test_synthesized_audio_is_16k_mono_and_plausible(built: tuple[DataConfig, SpeechData, SpeechData]) -> None:
    cfg, data, _ = built
    utterances = data.split("train") + data.split("validation")
    assert len(utterances) == 24
    for u in utterances:
        info = sf.info(str(u.audio_path))
        assert (info.samplerate, info.channels) == (16000, 1)
        assert u.audio_path.is_relative_to(Path(cfg.cache_dir) / "audio")
        assert u.audio_path.parent.name == u.audio_path.stem[:2]
        audio = load_audio(u.audio_path)
        assert audio.dtype == np.float32 and abs(audio.size / 16000 - u.duration) < 1e-3
        seconds_per_word = u.duration / len(words(u.text))
        assert 0.2 < seconds_per_word < 1.2, (u.text, u.duration)
        assert u.speaker in cfg.voices and u.domain in cfg.train_domains
    stats = data.stats["synthesis"]
    print(
        f"\nsynthesis: {stats['utterances_per_s']} utterances/s with {cfg.workers} workers, "
        f"mean {stats['mean_duration_s']} s"
    )
    assert stats["synthesized"] == 24 and stats["utterances_per_s"] > 0


def test_second_build_is_a_cache_hit(built: tuple[DataConfig, SpeechData, SpeechData]) -> None:
    _, first, second = built
    assert second.stats["synthesis"]["synthesized"] == 0
    assert second.stats["synthesis"]["cached"] == 24
    for name in ("train", "validation"):
        assert [u.uid for u in first.split(name)] == [u.uid for u in second.split(name)]
        assert [u.sha256 for u in first.split(name)] == [u.sha256 for u in second.split(name)]


def test_build_never_synthesizes_the_hidden_split(built: tuple[DataConfig, SpeechData, SpeechData]) -> None:
    cfg, data, _ = built
    files = list((Path(cfg.cache_dir) / "audio").rglob("*.wav"))
    assert len(files) == len(data.split("train")) + len(data.split("validation"))


def test_hidden_split_is_closed_and_opens_are_recorded(built: tuple[DataConfig, SpeechData, SpeechData]) -> None:
    _, data, _ = built
    data.split("train")
    for name in ("test", "hidden", "government"):
        with pytest.raises(HiddenSplitAccessError):
            data.split(name)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="valid: train, validation"):
        data.split("dev")  # type: ignore[arg-type]
    assert "train" in data.opened_splits and "test" not in data.opened_splits
    assert data.denied_requests[:3] == ["test", "hidden", "government"]
    fresh = SpeechData({"train": [], "validation": []}, data.manifest_path, {}, ["test"])
    fresh.split("validation")
    fresh.split("validation")
    assert fresh.opened_splits == ["validation"]


def test_manifest_lists_hashes_but_no_hidden_text(built: tuple[DataConfig, SpeechData, SpeechData]) -> None:
    cfg, data, _ = built
    manifest = read_manifest(data.manifest_path)
    raw = data.manifest_path.read_text()
    hidden_texts = [p.text for p in synthetic.plan_hidden(cfg, "test")]
    assert not any(text in raw for text in hidden_texts)
    hidden = manifest["splits"]["hidden"]
    assert hidden["domain"] == "government" and hidden["count"] == 6
    assert all(
        set(row) == {"id", "text_sha256", "part"} and row["part"] in ("dev", "test") for row in hidden["utterances"]
    )
    assert manifest["fingerprint"] == data.stats["fingerprint"]
    for name in ("train", "validation"):
        rows = manifest["splits"][name]["utterances"]
        assert [r["id"] for r in rows] == [u.uid for u in data.split(name)]
        assert all(len(r["audio_sha256"]) == 64 and len(r["text_sha256"]) == 64 for r in rows)
    check_disjoint(
        {n: [r["id"] for r in manifest["splits"][n]["utterances"]] for n in ("train", "validation", "hidden")}
    )


def test_load_hidden_split_for_the_judge(built: tuple[DataConfig, SpeechData, SpeechData]) -> None:
    cfg, data, _ = built
    hidden = load_hidden_split(cfg, progress=False, split="all")
    assert len(hidden) == 6 and {u.domain for u in hidden} == {"government"}
    from sttrl.data.splits import hidden_part  # 6 utterances: a part may be empty with this session's judge key

    parts = {u.uid: hidden_part(u.uid, cfg.hidden_dev_fraction) for u in hidden}
    test = load_hidden_split(cfg, progress=False, split="test") if "test" in parts.values() else []
    assert sorted(u.uid for u in test) == sorted(uid for uid, p in parts.items() if p == "test")
    assert not {u.uid for u in hidden} & {u.uid for n in ("train", "validation") for u in data.split(n)}
    assert all(sf.info(str(u.audio_path)).samplerate == 16000 for u in hidden)
    assert json.loads(data.manifest_path.with_suffix(".hidden.json").read_text())["count"] == 6


def test_hidden_split_mismatch_with_manifest_is_an_integrity_error(
    built: tuple[DataConfig, SpeechData, SpeechData],
) -> None:
    cfg, data, _ = built
    manifest = json.loads(data.manifest_path.read_text())
    original = data.manifest_path.read_text()
    manifest["splits"]["hidden"]["utterances"][0]["text_sha256"] = "0" * 64
    data.manifest_path.write_text(json.dumps(manifest))
    try:
        with pytest.raises(IntegrityError, match="hidden split differs"):
            load_hidden_split(cfg, progress=False)
    finally:
        data.manifest_path.write_text(original)


def test_splits_are_deterministic_disjoint_and_capped() -> None:
    cfg = DataConfig(sentences_per_domain=200)
    hidden = synthetic.plan_hidden(cfg, "test")
    lowered = {sha256_text(p.text.lower()) for p in hidden}
    first = synthetic.plan_episode(cfg, lowered)
    again = synthetic.plan_episode(cfg, lowered)
    assert first == again
    ids = {name: [p.uid for p in items] for name, items in first.items()}
    check_disjoint({**ids, "hidden": [p.uid for p in hidden]})
    share = len(ids["validation"]) / (len(ids["train"]) + len(ids["validation"]))
    assert 0.14 < share < 0.26
    assert all(is_validation(uid, 0.2) for uid in ids["validation"])
    capped = synthetic.plan_episode(cfg.model_copy(update={"max_train_utterances": 7}), set())["train"]
    assert capped == first["train"][:7]
    with pytest.raises(IntegrityError, match="share"):
        check_disjoint({"train": ["a", "b"], "hidden": ["b"]})


@needs_espeak
def test_relative_cache_dir_and_general_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = DataConfig(cache_dir=Path("rel-cache"), noise_snr_db=None, workers=2)
    general = build_general_data(cfg, 4, ["sw+f2", "sw+m3"], progress=False)
    assert len(general) == 4 and {u.domain for u in general} == {"general"}
    assert {u.speaker for u in general} <= {"sw+f2", "sw+m3"}
    assert all(u.audio_path.is_absolute() and u.audio_path.is_relative_to(tmp_path / "rel-cache") for u in general)
    hidden_texts = {p.text for p in synthetic.plan_hidden(cfg, "test")}
    assert not {u.text for u in general} & hidden_texts
    with pytest.raises(DataError, match="unknown espeak-ng voice"):
        build_general_data(cfg, 2, ["sw+bogus"], progress=False)
