"""What an evaluation returns (torch-free: graph state, tools and records read it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class EvalResult:
    wer: float
    cer: float
    n: int
    seconds: float
    utterances_per_s: float
    examples: list[dict] = field(default_factory=list)  # a few {"id", "reference", "hypothesis"}
    engine: str = "transformers"  # the decoder: "transformers" or "ct2/<compute type>"
    convert_seconds: float = 0.0  # of ``seconds``: writing the weights for the engine (ct2 only)
    # per utterance {"id", "words", "word_errors", "chars", "char_errors"} when asked for (the judge); not in to_dict
    utterances: list[dict] | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        del out["utterances"]  # written by the judge to a file of its own, never into caches or graph state
        return out
