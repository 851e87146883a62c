"""``train_block`` and ``evaluate``: the two sttrl operations an episode performs, as LangChain tools.

The graph's train and evaluate nodes invoke them, so each call shows up as a tool run in traces
(LangSmith, Studio). Arguments a model could see are the block index and the hyperparameters; the
episode itself (``episode``: an ``sttrl.runtime.EpisodeRuntime`` with its config, data and model) and
the progress callback are injected with ``InjectedToolArg`` and never appear in the tool-call schema.
The tools hold no logic of their own: each is one call into the runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from langchain_core.tools import InjectedToolArg, tool
from pydantic import BaseModel, ConfigDict, Field

from sttrl.actions import Hyperparams

EpisodeRuntime = Any  # sttrl.runtime.EpisodeRuntime; not imported here so that importing the tools loads no torch


class TrainBlockArgs(BaseModel):
    """Arguments of ``train_block``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    block: int = Field(ge=1, description="Block index, 1-based: the episode step this block belongs to.")
    lr: float = Field(gt=0.0, description="Peak learning rate for this block.")
    batch_size: int = Field(ge=1, description="Utterances per micro-batch.")
    grad_accum: int = Field(ge=1, description="Micro-batches per optimizer step.")
    freeze_layers: int = Field(ge=0, description="Number of leading encoder layers (and the conv stem) kept frozen.")
    episode: Annotated[EpisodeRuntime, InjectedToolArg] = Field(description="The episode's EpisodeRuntime (injected).")
    on_step: Annotated[Any, InjectedToolArg] = Field(
        None, description="Called with each optimizer step's sttrl.trainer.StepInfo (injected)."
    )


class EvaluateArgs(BaseModel):
    """Arguments of ``evaluate``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    block: int = Field(ge=0, description="Evaluate the model as it was after this block (0 = the starting model).")
    episode: Annotated[EpisodeRuntime, InjectedToolArg] = Field(description="The episode's EpisodeRuntime (injected).")


@tool("train_block", args_schema=TrainBlockArgs)
def train_block(
    block: int,
    lr: float,
    batch_size: int,
    grad_accum: int,
    freeze_layers: int,
    episode: EpisodeRuntime,
    on_step: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Train block ``block`` of the episode with the given hyperparameters: ``env.steps_per_action``
    real optimizer steps of the run's Whisper model on the training split.

    Idempotent: a block whose checkpoint is complete is loaded, not trained again; a block cut off
    mid-way continues from its last intra-block checkpoint (``env.checkpoint_every``). A NaN loss,
    an out-of-memory or a divergence rolls the model back to the block's start and is reported as
    ``status`` (``ok | oom | nan | diverged``), never raised.

    Returns ``{"result": BlockResult as a dict (status, steps, losses, mean_loss, samples_per_s,
    peak_memory_gb, global_step, ...), "checkpoint": {"block", "path", "sha256"}}`` where
    ``checkpoint`` names the block checkpoint written for this block and its weights' SHA-256.
    """
    hp = Hyperparams(lr=lr, batch_size=batch_size, grad_accum=grad_accum, freeze_layers=freeze_layers)
    result = episode.train_block(block, hp, on_step=on_step)
    return {"result": result.to_dict(), "checkpoint": episode.checkpoint_info(block)}


@tool("evaluate", args_schema=EvaluateArgs)
def evaluate(block: int, episode: EpisodeRuntime) -> dict[str, Any]:
    """Score the model as it was after block ``block`` on the validation split (training domains
    only; the hidden domain is never loaded here): greedy decoding, WER and CER after the declared
    text normalizer.

    Cached on disk per block, so calling it again for the same block returns the same numbers
    without decoding again. Returns an EvalResult as a dict: ``wer``, ``cer``, ``n`` (utterances),
    ``seconds``, ``utterances_per_s`` and a few ``examples`` (validation reference/hypothesis pairs).
    """
    return episode.evaluate(block).to_dict()
