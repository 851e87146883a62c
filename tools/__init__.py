"""LangChain tools over sttrl: train a block, evaluate a block. Typed, the docstring is the contract,
no logic of their own. The run (an ``EpisodeRuntime``) is injected by the caller, never chosen by a model."""

from sttrl import extras

extras.require("langchain_core", extra="graph", what="sttrl's LangChain tools (tools/)")

from tools.training import evaluate, train_block  # noqa: E402 - after the check, so a missing extra is one line

__all__ = ["train_block", "evaluate"]
