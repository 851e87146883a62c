"""Who decides: the controller registry, the classical controllers, the tuned schedule, lookahead search and
the teacher built on it, and the LLM prompt (rendered without LangChain). ``python -m sttrl.run`` and
``python -m sttrl.teacher`` live here."""
