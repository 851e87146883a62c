"""The environment core: the action and reward-kind registries, instance sets, the run directory's runtime,
the ONE episode loop with its typed phases (:mod:`sttrl.env.episode`), forks of a run directory, and
:class:`~sttrl.env.gym.SttEnv` (Gymnasium, registered as ``sttrl/Whisper-v0``)."""
