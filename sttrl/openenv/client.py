"""The typed OpenEnv client of an sttrl server: an openenv-core ``EnvClient`` (one WebSocket session = one episode).

from sttrl.openenv.client import SttrlEnvClient
from sttrl.openenv.models import SttrlAction

with SttrlEnvClient(base_url="http://127.0.0.1:8000").sync() as env:
    result = env.reset(seed=0)
    while not result.done:
        result = env.step(SttrlAction(action="keep", rationale="the loss still falls"))
    print(result.observation.judge["wer"], env.state().checkpoint)
"""

from __future__ import annotations

from typing import Any

from openenv.core.client_types import StepResult
from openenv.core.env_client import EnvClient

from sttrl.openenv.models import SttrlAction, SttrlObservation, SttrlState


class SttrlEnvClient(EnvClient[SttrlAction, SttrlObservation, SttrlState]):
    """An sttrl session; a training block can take minutes, so replies may take ``message_timeout_s`` (default
    30 minutes) to come."""

    def __init__(self, base_url: str, message_timeout_s: float = 1800.0, **kwargs: Any) -> None:
        super().__init__(base_url, message_timeout_s=message_timeout_s, **kwargs)

    def _step_payload(self, action: SttrlAction) -> dict[str, Any]:
        return action.model_dump(mode="json")

    def _parse_result(self, payload: dict[str, Any]) -> StepResult[SttrlObservation]:
        obs = SttrlObservation(**payload.get("observation", {}), reward=payload.get("reward"), done=payload["done"])
        return StepResult(observation=obs, reward=payload.get("reward"), done=payload["done"])

    def _parse_state(self, payload: dict[str, Any]) -> SttrlState:
        return SttrlState(**payload)
