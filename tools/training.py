"""``train_block`` and ``evaluate``: two phases of the episode (:class:`sttrl.env.episode.Episode`) as LangChain
tools.

The graph's train and evaluate nodes invoke them, so each call shows up as a tool run in traces (LangSmith,
Studio). What a model could see is the decided step (its number, action and the hyperparameters it set) or the
block index; the episode itself and the progress callback are injected with ``InjectedToolArg`` and never appear
in the tool-call schema. The tools hold no logic of their own: each is one call of an episode phase.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from langchain_core.tools import InjectedToolArg, tool
from pydantic import BaseModel, ConfigDict, Field

from sttrl.env.episode import Episode
from sttrl.env.phases import Pending


class TrainBlockArgs(BaseModel):
    """Arguments of ``train_block``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    step: Pending = Field(
        description="The decided step: its number (the block, 1-based), the action, and the "
        "hyperparameters before and after it (lr, batch_size, grad_accum, freeze_layers)."
    )
    episode: Annotated[Episode, InjectedToolArg] = Field(description="The episode (injected).")
    on_step: Annotated[Any, InjectedToolArg] = Field(
        None, description="Called with each optimizer step's sttrl.train.blocks.StepInfo (injected)."
    )


class EvaluateArgs(BaseModel):
    """Arguments of ``evaluate``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    block: int = Field(ge=0, description="Evaluate the model as it was after this block (0 = the starting model).")
    episode: Annotated[Episode, InjectedToolArg] = Field(description="The episode (injected).")


@tool("train_block", args_schema=TrainBlockArgs)
def train_block(step: Pending, episode: Episode, on_step: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Train the block of the decided step with the hyperparameters its action set: one block of real optimizer
    steps of the run's Whisper model on the training split (``env.steps_per_action`` steps, or with
    ``env.budget_unit=samples`` the steps that ``env.samples_per_action`` samples need at that batch size).

    Idempotent: a block whose checkpoint is complete is loaded, not trained again; a block cut off
    mid-way continues from its last intra-block checkpoint (``env.checkpoint_every``). A NaN loss,
    an out-of-memory or a divergence rolls the model back to the block's start and is reported as
    ``status`` (``ok | oom | nan | diverged``), never raised.

    Returns ``{"result": BlockResult as a dict (status, steps, losses, mean_loss, samples_per_s,
    peak_memory_gb, global_step, ...), "checkpoint": {"block", "path", "sha256"}}`` where
    ``checkpoint`` names the block checkpoint written for this block and its weights' SHA-256.
    """
    trained = episode.train(step, on_step=on_step)
    return {"result": trained.result.to_dict(), "checkpoint": trained.checkpoint}


@tool("evaluate", args_schema=EvaluateArgs)
def evaluate(block: int, episode: Episode) -> dict[str, Any]:
    """Score the model as it was after block ``block`` on the validation split (training domains
    only; the hidden domain is never loaded here): the teacher-forced validation loss (one forward
    pass, no decoding) after every block, and greedy decoding with the run's evaluation engine
    (``train.eval_engine``), WER and CER after the declared text normalizer when ``env.eval_every``
    decodes this block (else the last measured WER is carried).

    Cached on disk per block, so calling it again for the same block returns the same numbers
    without decoding again. Returns an EvalResult as a dict: ``wer``, ``cer``, ``n`` (utterances),
    ``seconds``, ``utterances_per_s``, a few ``examples`` (validation reference/hypothesis pairs),
    ``engine`` (the decoder that scored it), ``convert_seconds``, ``val_loss``, ``loss_seconds`` and
    ``wer_block`` (null: measured on this block's model; else the block whose WER is carried).
    """
    return episode.evaluate(block).to_dict()
