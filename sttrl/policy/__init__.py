"""Learning a controller: datasets of decisions, step-wise (SFT) and outcome stages (RLOO with KL to a
reference; DPO and GRPO through TRL's trainers: :mod:`sttrl.policy.trl_dpo`, :mod:`sttrl.policy.grpo`, whose
rollouts call one tool per action, :mod:`sttrl.policy.tools`), choosing an action by scoring every enabled one
(``scoring``), the held-out check ``sttrl.learn`` prints (``heldout``), and the ``learned`` controller that decides
with the trained model.

Importing this package is cheap (no torch): the heavy modules are ``sttrl.policy.core`` (the math),
``sttrl.policy.data``, ``sttrl.policy.stages`` (training) and ``sttrl.policy.episodes``; ``sttrl.policy.controller``
imports torch only when the learned controller decides. Never imports LangChain or LangGraph.
"""
