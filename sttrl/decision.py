"""The ``Decision`` schema every LLM controller answers with (hosted, local or learned): an action and why."""

from __future__ import annotations

from pydantic import BaseModel, Field

from sttrl.actions import Action


class Decision(BaseModel):
    """The controller's choice for the next training block."""

    action: Action = Field(description="The action to apply before the next training block.")
    rationale: str = Field(description="One or two sentences that justify the action with the observed numbers.")
