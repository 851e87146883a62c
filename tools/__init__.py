"""LangChain tools over sttrl: train a block, evaluate a block. Typed, the docstring is the contract,
no logic of their own. The run (an ``EpisodeRuntime``) is injected by the caller, never chosen by a model."""

from tools.training import evaluate, train_block

__all__ = ["train_block", "evaluate"]
