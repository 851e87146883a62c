"""The environment core: the action and reward-kind registries, instance sets, the run directory's runtime,
the ONE episode loop (:mod:`sttrl.env.episode`) with its facts and typed phase results (:mod:`sttrl.env.phases`),
forks of a run directory, the block cache (:mod:`sttrl.env.blockcache`), episodes driven from outside one decision
at a time (:mod:`sttrl.env.session`: the OpenEnv server's sessions, TRL's rollouts) and
:class:`~sttrl.env.gym.SttEnv` (Gymnasium, registered as ``sttrl/Whisper-v0`` at ``import sttrl``)."""
