"""Re-export: the prompt's extra facts live in :mod:`sttrl.prompt_facts` (pure; the learned controller renders
the same prompt without LangChain)."""

from sttrl.prompt_facts import facts, render_facts, slope, trend_word  # noqa: F401
