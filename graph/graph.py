"""The episode as a LangGraph state machine.

``build_graph()`` returns the uncompiled ``StateGraph``; ``graph`` below is compiled without a
checkpointer for LangGraph Studio / ``langgraph dev`` (the server brings its own persistence).
``python -m graph.run`` compiles the same builder with a SQLite or Postgres checkpointer.

Importing this module has no side effects: no data, model or file is touched until a run starts.
In Studio, start a run with an input such as ``{"preset": "debug", "agent": "rule"}``.
"""

from __future__ import annotations

from langchain_core.runnables import RunnableLambda
from langgraph.graph import END, START, StateGraph

from graph import nodes
from graph.state import EpisodeContext, EpisodeInput, EpisodeOutput, EpisodeState

GRAPH_NAME = "sttrl-episode"


def build_graph() -> StateGraph:
    """configure → setup → observe → decide → train → evaluate → reward → observe …; stop or spent budget → judge."""
    builder = StateGraph(
        EpisodeState, context_schema=EpisodeContext, input_schema=EpisodeInput, output_schema=EpisodeOutput
    )
    builder.add_node("configure", nodes.configure)
    builder.add_node("setup", nodes.setup)
    builder.add_node("observe", nodes.observe)
    builder.add_node("decide", nodes.decide)
    # sync for the CLI, async (cancellable mid-block) for the server: LangGraph picks by how it is run
    builder.add_node("train", RunnableLambda(nodes.train, afunc=nodes.atrain, name="train"))
    builder.add_node("evaluate", nodes.evaluate)
    builder.add_node("reward", nodes.reward)
    builder.add_node("judge", nodes.judge)
    builder.add_edge(START, "configure")
    builder.add_edge("configure", "setup")
    builder.add_conditional_edges("setup", nodes.route_after_setup)
    builder.add_conditional_edges("observe", nodes.route_after_observe)
    builder.add_conditional_edges("decide", nodes.route_after_decide)
    builder.add_edge("train", "evaluate")
    builder.add_edge("evaluate", "reward")
    builder.add_edge("reward", "observe")
    builder.add_edge("judge", END)
    return builder


def recursion_limit(max_actions: int) -> int:
    """Supersteps an episode of ``max_actions`` decisions needs, with room to spare."""
    return 6 * max_actions + 20


graph = build_graph().compile(name=GRAPH_NAME)
