"""Evaluation: batched greedy decoding with WER/CER (:mod:`sttrl.eval.decode`), the engine registry
(:mod:`sttrl.eval.engines`: transformers, CTranslate2) and the teacher-forced validation loss."""
