"""Swahili morphology used by the corpus generator: verb conjugation, noun-class agreement, numbers.

Persons are ``1s 2s 3s 1p 2p 3p``; noun classes are their numbers as strings (``"1"``…``"15"``).
Human nouns take class 1/2 agreement (``kijana anasoma``, ``viongozi wanasema``).
"""

from __future__ import annotations

from typing import Literal

Tense = Literal["pres", "past", "fut", "perf", "hab", "negpres", "negpast", "negfut", "subj"]
TENSES: tuple[str, ...] = ("pres", "past", "fut", "perf", "hab", "negpres", "negpast", "negfut", "subj")

# Subject prefixes (affirmative) and negative subject prefixes, by person or noun class.
SUBJECT_PREFIX: dict[str, str] = {
    "1s": "ni",
    "2s": "u",
    "3s": "a",
    "1p": "tu",
    "2p": "m",
    "3p": "wa",
    "1": "a",
    "2": "wa",
    "3": "u",
    "4": "i",
    "5": "li",
    "6": "ya",
    "7": "ki",
    "8": "vi",
    "9": "i",
    "10": "zi",
    "11": "u",
    "14": "u",
    "15": "ku",
}
NEGATIVE_PREFIX: dict[str, str] = {
    "1s": "si",
    "2s": "hu",
    "3s": "ha",
    "1p": "hatu",
    "2p": "ham",
    "3p": "hawa",
    "1": "ha",
    "2": "hawa",
    "3": "hau",
    "4": "hai",
    "5": "hali",
    "6": "haya",
    "7": "haki",
    "8": "havi",
    "9": "hai",
    "10": "hazi",
    "11": "hau",
    "14": "hau",
    "15": "haku",
}
TENSE_MARKER = {"pres": "na", "past": "li", "fut": "ta", "perf": "me"}
# Stems that fuse with a preceding ku- (kwenda, kwisha).
_KU_FUSING = {"enda": "kwenda", "isha": "kwisha"}

# Concords for modifiers, by noun class.
_POSSESSIVE_PREFIX = {
    "1": "w",
    "2": "w",
    "3": "w",
    "4": "y",
    "5": "l",
    "6": "y",
    "7": "ch",
    "8": "vy",
    "9": "y",
    "10": "z",
    "11": "w",
    "14": "w",
    "15": "kw",
}
DEMONSTRATIVE_THIS = {
    "1": "huyu",
    "2": "hawa",
    "3": "huu",
    "4": "hii",
    "5": "hili",
    "6": "haya",
    "7": "hiki",
    "8": "hivi",
    "9": "hii",
    "10": "hizi",
    "11": "huu",
    "14": "huu",
    "15": "huku",
}
DEMONSTRATIVE_THAT = {
    "1": "yule",
    "2": "wale",
    "3": "ule",
    "4": "ile",
    "5": "lile",
    "6": "yale",
    "7": "kile",
    "8": "vile",
    "9": "ile",
    "10": "zile",
    "11": "ule",
    "14": "ule",
    "15": "kule",
}
DEMONSTRATIVE_REF = {
    "1": "huyo",
    "2": "hao",
    "3": "huo",
    "4": "hiyo",
    "5": "hilo",
    "6": "hayo",
    "7": "hicho",
    "8": "hivyo",
    "9": "hiyo",
    "10": "hizo",
    "11": "huo",
    "14": "huo",
    "15": "huko",
}
_ALL = {"2": "wote", "4": "yote", "6": "yote", "8": "vyote", "10": "zote"}
_MANY = {"2": "wengi", "4": "mingi", "6": "mengi", "8": "vingi", "10": "nyingi"}
_ADJ_PREFIX = {
    "1": "m",
    "2": "wa",
    "3": "m",
    "4": "mi",
    "5": "",
    "6": "ma",
    "7": "ki",
    "8": "vi",
    "9": "",
    "10": "",
    "11": "m",
    "14": "m",
}
# Class 9/10 (nasal) and class 5 forms that do not follow the plain prefix rule.
_ADJ_NASAL = {"zuri": "nzuri", "kubwa": "kubwa", "dogo": "ndogo", "pya": "mpya", "bovu": "mbovu", "refu": "ndefu"}
_ADJ_CLASS5 = {"pya": "jipya"}
ADJECTIVES: tuple[str, ...] = ("zuri", "kubwa", "dogo", "pya")
INVARIANT_ADJECTIVES: tuple[str, ...] = ("safi", "bora", "muhimu", "maalumu")
PLURAL_CLASSES = frozenset({"2", "4", "6", "8", "10"})

UNITS = ("", "moja", "mbili", "tatu", "nne", "tano", "sita", "saba", "nane", "tisa")
TENS = ("", "kumi", "ishirini", "thelathini", "arobaini", "hamsini", "sitini", "sabini", "themanini", "tisini")
# Number stems that agree with the noun class (others are invariant).
_AGREEING = {"moja": "moja", "mbili": "wili", "tatu": "tatu", "nne": "nne", "tano": "tano", "nane": "nane"}
_NUMBER_PREFIX = {"1": "m", "2": "wa", "3": "m", "4": "mi", "6": "ma", "7": "ki", "8": "vi", "11": "m"}


def is_person(agreement: str) -> bool:
    return agreement in {"1s", "2s", "3s", "1p", "2p", "3p"}


def _ends_in_a(stem: str) -> bool:
    return stem.endswith("a")


def conjugate(stem: str, agreement: str, tense: str) -> str:
    """Conjugate a verb stem (``panda``; monosyllabic ones written ``ku-la``) for a subject and tense."""
    if agreement not in SUBJECT_PREFIX:
        raise ValueError(f"unknown person/noun class {agreement!r}; valid: {sorted(SUBJECT_PREFIX)}")
    mono = stem.startswith("ku-")
    bare = stem[3:] if mono else stem
    with_ku = "ku" + bare if mono else bare
    sp, neg = SUBJECT_PREFIX[agreement], NEGATIVE_PREFIX[agreement]
    if tense in TENSE_MARKER:
        return sp + TENSE_MARKER[tense] + with_ku
    if tense == "hab":
        return "hu" + bare
    if tense == "negpast":
        return neg + (_KU_FUSING.get(bare) or "ku" + bare)
    if tense == "negfut":
        return neg + "ta" + with_ku
    if tense == "negpres":
        return neg + (bare[:-1] + "i" if _ends_in_a(bare) else bare)
    if tense == "subj":
        sp = "mw" if sp == "m" and bare[0] in "aeiou" else sp
        return sp + (bare[:-1] + "e" if _ends_in_a(bare) else bare)
    raise ValueError(f"unknown tense {tense!r}; valid: {TENSES}")


def infinitive(stem: str) -> str:
    """``panda`` -> ``kupanda``; ``ku-la`` -> ``kula``; ``enda`` -> ``kwenda``."""
    if stem.startswith("ku-"):
        return "ku" + stem[3:]
    return _KU_FUSING.get(stem, "ku" + stem)


def possessive(cls: str, person: str) -> str:
    """Possessive ``-angu/-ako/-ake/-etu/-enu/-ao`` agreeing with class ``cls``."""
    suffix = {"1s": "angu", "2s": "ako", "3s": "ake", "1p": "etu", "2p": "enu", "3p": "ao"}[person]
    return _POSSESSIVE_PREFIX[cls] + suffix


def adjective(stem: str, cls: str) -> str:
    """An agreeing adjective (``zuri`` + class 7 -> ``kizuri``); invariant ones are returned as is."""
    if stem in INVARIANT_ADJECTIVES:
        return stem
    if cls in {"9", "10"}:
        return _ADJ_NASAL[stem]
    if cls == "5":
        return _ADJ_CLASS5.get(stem, stem)
    return _ADJ_PREFIX[cls] + stem


def quantifier(kind: Literal["all", "many"], cls: str) -> str | None:
    """``wote``/``yote``… or ``wengi``/``mingi``… for plural classes, else ``None``."""
    table = _ALL if kind == "all" else _MANY
    return table.get(cls)


def _below_100(n: int) -> str:
    tens, unit = divmod(n, 10)
    if not tens:
        return UNITS[unit]
    return TENS[tens] + (f" na {UNITS[unit]}" if unit else "")


def _below_1000(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    if not hundreds:
        return _below_100(rest)
    head = f"mia {UNITS[hundreds]}"
    return head + (f" na {_below_100(rest)}" if rest else "")


def number_words(n: int, cls: str | None = None) -> str:
    """Swahili cardinal for ``0 <= n < 10**9``; with ``cls`` the final unit agrees (``watu watano``)."""
    if not 0 <= n < 10**9:
        raise ValueError(f"number {n} out of range 0..999999999")
    if n == 0:
        return "sifuri"
    millions, rest = divmod(n, 1_000_000)
    parts: list[str] = []
    if millions:
        parts.append(f"milioni {_below_1000(millions)}")
    lakh, rest = divmod(rest, 100_000)
    if lakh:
        parts.append(f"laki {UNITS[lakh]}")
    thousands, rest = divmod(rest, 1000)
    if thousands:
        parts.append(f"elfu {_below_100(thousands)}")
    if rest >= 100:
        parts.append(_below_1000(rest))
    elif rest:
        parts.append(("na " if parts else "") + _below_100(rest))
    text = " ".join(parts)
    unit = n % 10
    if cls is not None and unit and UNITS[unit] in _AGREEING and cls in _NUMBER_PREFIX:
        stem = _AGREEING[UNITS[unit]]
        if cls in {"5", "9", "10"}:
            return text
        word = _NUMBER_PREFIX[cls] + stem
        if UNITS[unit] == "moja" and cls in PLURAL_CLASSES:  # watu ishirini na mmoja
            word = {"2": "mmoja", "4": "mmoja", "8": "kimoja"}.get(cls, "moja")
        text = text[: -len(UNITS[unit])] + word
    return text
