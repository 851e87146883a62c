"""The environment core: the action and reward-kind registries, instance sets, the run directory's runtime,
the ONE episode loop (:mod:`sttrl.env.episode`) with its facts and typed phase results (:mod:`sttrl.env.phases`),
forks of a run directory, and :class:`~sttrl.env.gym.SttEnv` (Gymnasium)."""
