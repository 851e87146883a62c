"""The contract between the episode and whoever decides: ``Decision`` (the schema every LLM controller answers
with: an action and why), ``Decided`` (a decision with its provenance, as the trajectory records it) and the
``Controller`` protocol. Controllers themselves are registered in :mod:`sttrl.control.registry`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, Field

from sttrl.env.actions import Action


class Decision(BaseModel):
    """The controller's choice for the next training block."""

    action: Action = Field(description="The action to apply before the next training block.")
    rationale: str = Field(description="One or two sentences that justify the action with the observed numbers.")


@dataclass
class Decided:
    """A decision with its provenance, as recorded in the trajectory (``source``)."""

    action: Action
    rationale: str
    source: str
    attempts: int = 0
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["action"] = self.action.value
        return out


class Controller(Protocol):
    """An episode controller: the next action from the observation and the records so far."""

    name: str

    def decide(self, observation: dict[str, Any], history: list[dict[str, Any]]) -> Decided: ...
