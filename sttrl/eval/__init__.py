"""Evaluation: batched greedy decoding with WER/CER (:mod:`sttrl.eval.decode`), the engine registry
(:mod:`sttrl.eval.engines`: one module per engine, transformers and CTranslate2 built in) and what an evaluation
returns (:mod:`sttrl.eval.result`)."""
