"""The LangGraph layer of sttrl: the episode as a checkpointed state machine (``graph.graph``), its
agents (``graph.agents``) and the CLI (``python -m graph.run``). Importing the package is cheap."""
