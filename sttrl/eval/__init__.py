"""Evaluation: batched greedy decoding with WER/CER (:mod:`sttrl.eval.decode`), the engine registry
(:mod:`sttrl.eval.engines`: transformers, CTranslate2) and the teacher-forced validation loss
(:mod:`sttrl.eval.loss`: one forward pass per batch, no decoding)."""
