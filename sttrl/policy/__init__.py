"""Learning a controller: datasets of decisions, step-wise (SFT) and outcome stages (RLOO with KL to a
reference; DPO and GRPO through TRL's trainers: :mod:`sttrl.policy.trl_dpo`, :mod:`sttrl.policy.grpo`, whose
rollouts call one tool per action, :mod:`sttrl.policy.tools`), and the ``learned`` controller that decides with the
trained model.

Importing this package is cheap (no torch): the heavy modules are ``sttrl.policy.core`` (the math),
``sttrl.policy.stages`` (training) and ``sttrl.policy.controller``. Never imports LangChain or LangGraph.
"""
