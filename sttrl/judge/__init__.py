"""The terminal judge: scoring the final model on the hidden split (:mod:`sttrl.judge.scoring`, also
``python -m sttrl.judge``) and what it trusts: signed run records, hashes, recomputed rewards
(:mod:`sttrl.judge.integrity`)."""
