"""Re-export: the prompt's extra facts live in :mod:`sttrl.control.prompt_facts` (pure; the learned controller renders
the same prompt without LangChain)."""

from sttrl.control.prompt_facts import facts, render_facts, slope, trend_word  # noqa: F401
