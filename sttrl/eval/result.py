"""What an evaluation returns (torch-free: graph state, tools and records read it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class EvalResult:
    wer: float
    cer: float
    n: int
    seconds: float  # decoding (0.0 when the WER is carried from an earlier block)
    utterances_per_s: float
    examples: list[dict] = field(default_factory=list)  # a few {"id", "reference", "hypothesis"}
    engine: str = "transformers"  # the decoder: "transformers" or "ct2/<compute type>"
    convert_seconds: float = 0.0  # of ``seconds``: writing the weights for the engine (ct2 only)
    # The teacher-forced validation loss on the same utterances (sttrl.eval.loss) and its wall time; None in
    # evaluation files written before it existed.
    val_loss: float | None = None
    loss_seconds: float = 0.0
    # None: WER and CER were measured on this evaluation's model. A block number: they are carried from the
    # evaluation after that block (env.eval_every decodes only every k-th block; the loss is measured every block).
    wer_block: int | None = None
    # per utterance {"id", "words", "word_errors", "chars", "char_errors"} when asked for (the judge); not in to_dict
    utterances: list[dict] | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        del out["utterances"]  # written by the judge to a file of its own, never into caches or graph state
        return out

    def wer_measured_after(self, block: int) -> int:
        """The block whose model the WER was measured on, for this evaluation of block ``block``."""
        return block if self.wer_block is None else self.wer_block
