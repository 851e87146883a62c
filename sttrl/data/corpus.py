"""Offline Swahili corpus: templates x word lists from ``sttrl/data/lexicon/*.txt``, filled with agreement.

Lexicon files hold ``[section]`` headers and one entry per line (``text | agreement``; ``#`` comments).
``common.txt`` is shared; a domain file's section of the same name extends the common one.
Templates (section ``[templates]``) use these slots, filled left to right:

``{S:sec}`` subject (sets the agreement of later verbs) · ``{V:sec}`` / ``{V:sec:tense}`` conjugated verb
phrase · ``{INF:sec}`` infinitive · ``{N:sec}`` an entry as is · ``{NP:sec}`` a noun with an agreeing
modifier · ``{CNT:sec}`` a noun with an agreeing number
(``{SC:sec}`` the same as subject) · ``{NUM:a-b}``, ``{NUM:a-b/step}``,
``{NUM:a-b@class}`` numbers in words · ``{T}`` a time expression matching the tense · ``{CLOCK}``,
``{DATE}`` · ``[a|b|]`` inline alternatives. A template may start with ``<past,fut>`` to restrict its tense.
Entries may contain slots themselves.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from sttrl.data import grammar
from sttrl.errors import DataError

LEXICON_DIR = Path(__file__).parent / "lexicon"
EPISODE_DOMAINS: tuple[str, ...] = ("health", "agriculture", "government")
PRETRAIN_DOMAIN = "general"
DOMAINS: tuple[str, ...] = (*EPISODE_DOMAINS, PRETRAIN_DOMAIN)
MIN_WORDS, MAX_WORDS = 4, 14

_TENSE_WEIGHTS = {"pres": 3, "past": 3, "fut": 3, "perf": 2, "hab": 1, "negpast": 1, "negfut": 1, "negpres": 1}
_TIME_SECTION = {
    "pres": "time_pres",
    "negpres": "time_pres",
    "past": "time_past",
    "negpast": "time_past",
    "fut": "time_fut",
    "negfut": "time_fut",
    "perf": "time_perf",
    "hab": "time_hab",
    "subj": "time_fut",
}
_CLOCK = {"asubuhi": (12, 1, 2, 3, 4, 5), "mchana": (6, 7, 8, 9), "jioni": (10, 11, 12, 1), "usiku": (2, 3, 4, 5)}
_SLOT = re.compile(r"\{([A-Z]+)(?::([^{}]*))?\}")
_ALTERNATIVE = re.compile(r"\[([^\[\]]*)\]")
_AGREEMENT = re.compile(r"(.*?)\s*\|\s*(\d{1,2}|[123][sp])")
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")


@dataclass(frozen=True)
class Entry:
    """One lexicon line: its text and optional agreement (person ``1s``… or noun class ``1``…``15``)."""

    text: str
    agreement: str | None = None


Lexicon = dict[str, dict[str, list[Entry]]]


def _parse_file(path: Path) -> dict[str, list[Entry]]:
    sections: dict[str, list[Entry]] = {}
    current: list[Entry] | None = None
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]") and "|" not in line:
            current = sections.setdefault(line[1:-1].strip(), [])
            continue
        if current is None:
            raise DataError(f"{path}:{lineno}: entry before any [section] header")
        match = _AGREEMENT.fullmatch(line)
        text, agreement = (match.group(1), match.group(2)) if match else (line, None)
        if agreement and agreement not in grammar.SUBJECT_PREFIX:
            raise DataError(
                f"{path}:{lineno}: agreement {agreement!r} is not a person or noun class; "
                f"valid: {sorted(grammar.SUBJECT_PREFIX)}"
            )
        current.append(Entry("" if text == "_" else text, agreement))
    return sections


@lru_cache(maxsize=1)
def load_lexicon() -> Lexicon:
    """Parse every lexicon file; a domain's sections extend ``common.txt``'s."""
    common = _parse_file(LEXICON_DIR / "common.txt")
    lexicon: Lexicon = {}
    for domain in DOMAINS:
        own = _parse_file(LEXICON_DIR / f"{domain}.txt")
        merged = {name: list(entries) for name, entries in common.items()}
        for name, entries in own.items():
            merged.setdefault(name, []).extend(entries)
        if len(merged.get("templates", [])) < 1:
            raise DataError(f"{LEXICON_DIR / (domain + '.txt')}: no [templates] section")
        lexicon[domain] = merged
    return lexicon


def lexicon_fingerprint() -> str:
    """sha256 over all lexicon files, so caches and manifests change when the corpus does."""
    h = hashlib.sha256()
    for path in sorted(LEXICON_DIR.glob("*.txt")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


class _Filler:
    """Fills one template; holds the current subject agreement and the sentence's tense."""

    def __init__(self, sections: dict[str, list[Entry]], rng: random.Random, tense: str, domain: str) -> None:
        self.sections, self.rng, self.tense, self.domain = sections, rng, tense, domain
        self.agreement = "3s"

    def entry(self, name: str) -> Entry:
        entries = self.sections.get(name)
        if not entries:
            raise DataError(f"lexicon: section [{name}] is missing or empty (domain {self.domain!r})")
        return self.rng.choice(entries)

    def fill(self, text: str, depth: int = 0) -> str:
        if depth > 6:
            raise DataError(f"lexicon: slots nested too deeply in {text!r} (domain {self.domain!r})")
        while match := _ALTERNATIVE.search(text):
            text = text[: match.start()] + self.rng.choice(match.group(1).split("|")) + text[match.end() :]
        return _SLOT.sub(lambda m: self.slot(m.group(1), m.group(2) or "", depth), text)

    def slot(self, kind: str, arg: str, depth: int) -> str:
        name, _, option = arg.partition(":")
        if kind == "S":
            entry = self.entry(name)
            self.agreement = entry.agreement or "3s"
            return self.fill(entry.text, depth + 1)
        if kind == "V":
            verb, _, rest = self.fill(self.entry(name).text, depth + 1).partition(" ")
            form = grammar.conjugate(verb, self.agreement, option or self.tense)
            return f"{form} {rest}".strip()
        if kind == "INF":
            verb, _, rest = self.fill(self.entry(name).text, depth + 1).partition(" ")
            return f"{grammar.infinitive(verb)} {rest}".strip()
        if kind == "N":
            return self.fill(self.entry(name).text, depth + 1)
        if kind == "NP":
            return self.noun_phrase(self.entry(name), depth)
        if kind in ("CNT", "SC"):
            entry = self.entry(name)
            if kind == "SC":
                self.agreement = entry.agreement or "3p"
            n = self.rng.randint(2, 10) if self.rng.random() < 0.7 else self.rng.randint(11, 99)
            return f"{self.fill(entry.text, depth + 1)} {grammar.number_words(n, entry.agreement)}"
        if kind == "NUM":
            return self.number(arg)
        if kind == "T":
            return self.fill(self.entry(_TIME_SECTION[name or self.tense]).text, depth + 1)
        if kind == "CLOCK":
            part = self.rng.choice(sorted(_CLOCK))
            hour = grammar.number_words(self.rng.choice(_CLOCK[part]))
            extra = self.rng.choice(["", "", "", " na nusu", " na robo", " kasoro robo", " na dakika kumi"])
            return f"saa {hour}{extra} {part}"
        if kind == "DATE":
            month = self.fill(self.entry("months").text, depth + 1)
            return f"tarehe {grammar.number_words(self.rng.randint(1, 30))} {month}"
        raise DataError(
            f"lexicon: unknown slot {{{kind}}} (domain {self.domain!r}); valid: S SC V INF N NP CNT NUM T CLOCK DATE"
        )

    def number(self, arg: str) -> str:
        match = re.fullmatch(r"(\d+)-(\d+)(?:/(\d+))?(?:@(\d+))?", arg)
        if not match:
            raise DataError(
                f"lexicon: bad number slot {{NUM:{arg}}}; write {{NUM:a-b}}, {{NUM:a-b/step}} or {{NUM:a-b@class}}"
            )
        lo, hi, step, cls = match.groups()
        step_n = int(step or 1)
        value = self.rng.randrange(int(lo), int(hi) + 1, step_n) if step_n > 1 else self.rng.randint(int(lo), int(hi))
        return grammar.number_words(max(value, 1), cls)

    def noun_phrase(self, entry: Entry, depth: int) -> str:
        noun = self.fill(entry.text, depth + 1)
        cls = entry.agreement
        if cls is None or grammar.is_person(cls) or " " in noun or cls not in grammar.DEMONSTRATIVE_THIS:
            return noun
        r = self.rng.random()
        if r < 0.42:
            return noun
        if r < 0.52:
            return f"{noun} {grammar.DEMONSTRATIVE_THIS[cls]}"
        if r < 0.57:
            return f"{noun} {grammar.DEMONSTRATIVE_THAT[cls]}"
        if r < 0.64:
            return f"{noun} {grammar.DEMONSTRATIVE_REF[cls]}"
        if r < 0.80 and cls != "15":
            return f"{noun} {grammar.possessive(cls, self.rng.choice(['1s', '2s', '3s', '1p', '3p']))}"
        if r < 0.92 and cls != "15":
            stem = self.rng.choice(grammar.ADJECTIVES + grammar.INVARIANT_ADJECTIVES)
            return f"{noun} {grammar.adjective(stem, cls)}"
        quant = grammar.quantifier(self.rng.choice(["all", "many"]), cls)
        return f"{noun} {quant}" if quant else noun


def _tidy(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+([.,?!;:])", r"\1", text)
    text = re.sub(r",\s*([.?!])", r"\1", text)
    text = re.sub(r"([.,?!])(?=[^\s])", r"\1 ", text).strip()
    text = text.lstrip(",. ")
    return text[:1].upper() + text[1:]


def words(text: str) -> list[str]:
    """Lowercased words of a sentence, punctuation dropped (apostrophes inside words kept: ng'ombe)."""
    return _WORD.findall(text.lower())


def _tense_for(template: str, rng: random.Random) -> tuple[str, str]:
    match = re.match(r"<([a-z,]+)>\s*", template)
    if match:
        options = match.group(1).split(",")
        bad = [t for t in options if t not in grammar.TENSES]
        if bad:
            raise DataError(f"lexicon: template {template!r} names unknown tenses {bad}; valid: {grammar.TENSES}")
        return rng.choice(options), template[match.end() :]
    names = list(_TENSE_WEIGHTS)
    return rng.choices(names, weights=[_TENSE_WEIGHTS[t] for t in names])[0], template


def templates(domain: str) -> list[str]:
    """The raw templates of a domain."""
    return [e.text for e in _sections(domain)["templates"]]


def _sections(domain: str) -> dict[str, list[Entry]]:
    lexicon = load_lexicon()
    if domain not in lexicon:
        raise DataError(f"unknown corpus domain {domain!r}; valid: {', '.join(DOMAINS)}")
    return lexicon[domain]


def fill_template(domain: str, template: str, rng: random.Random) -> str:
    """One sentence from one template."""
    tense, body = _tense_for(template, rng)
    return _tidy(_Filler(_sections(domain), rng, tense, domain).fill(body))


def generate_sentences(domain: str, n: int, seed: int = 0, *, salt: str = "") -> list[str]:
    """``n`` distinct sentences of ``domain`` (4–14 words, numbers in words), deterministic in ``seed``.

    Templates are used in shuffled rounds, so every template contributes about equally. ``salt`` (the hidden
    split's, derived from the judge key: sttrl.data.hidden) draws a stream public arguments cannot reach.
    """
    if n < 0:
        raise DataError(f"generate_sentences: n must be >= 0, got {n}")
    sections = _sections(domain)
    pool = [e.text for e in sections["templates"]]
    rng = random.Random(f"sttrl-corpus:{domain}:{seed}" + (f":{salt}" if salt else ""))
    out: list[str] = []
    seen: set[str] = set()
    order: list[str] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 200 * n + 1000:
            raise DataError(
                f"corpus domain {domain!r} yields only {len(out)} distinct sentences, fewer than the {n} asked "
                "(lower data.sentences_per_domain or extend sttrl/data/lexicon)"
            )
        if not order:
            order = list(pool)
            rng.shuffle(order)
        sentence = fill_template(domain, order.pop(), rng)
        count = len(words(sentence))
        if not MIN_WORDS <= count <= MAX_WORDS or any(c.isdigit() for c in sentence):
            continue
        key = sentence.lower()
        if key in seen:
            continue
        seen.add(key)
        out.append(sentence)
    return out


def vocabulary(sentences: Iterable[str]) -> set[str]:
    """The set of lowercased words in ``sentences``."""
    return {w for s in sentences for w in words(s)}


def vocabulary_overlap(hidden_sentences: Sequence[str], train_sentences: Iterable[str]) -> float:
    """Share of running words of ``hidden_sentences`` whose word occurs in ``train_sentences``."""
    known = vocabulary(train_sentences)
    tokens = [w for s in hidden_sentences for w in words(s)]
    if not tokens:
        raise DataError("vocabulary_overlap: hidden_sentences hold no words")
    return sum(w in known for w in tokens) / len(tokens)
