"""The LangGraph layer of sttrl: the episode as a checkpointed state machine (``graph.graph``), its
agents (``graph.agents``) and the CLI (``python -m graph.run``). Importing the package is cheap; without
the ``graph`` extra it stops with one line that names the extra (``sttrl.extras``)."""

from sttrl import extras

extras.require("langgraph", "langchain_core", extra="graph", what="sttrl's LangGraph layer (graph/)")
