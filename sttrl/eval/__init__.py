"""Evaluation: batched greedy decoding with WER/CER (:mod:`sttrl.eval.decode`), the engine registry
(:mod:`sttrl.eval.engines`: one module per engine, transformers and CTranslate2 built in), the teacher-forced
validation loss (:mod:`sttrl.eval.loss`: one forward pass per batch, no decoding) and what an evaluation returns
(:mod:`sttrl.eval.result`)."""
