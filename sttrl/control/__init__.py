"""Who decides: the controller registry, the classical controllers, the tuned schedule, the contextual schedule (its
parameters per instance, with its maps in ``context_models``), lookahead search (its criteria in a registry) and the
teacher built on it, and the LLM prompt (rendered without LangChain). ``python -m sttrl.run`` and
``python -m sttrl.teacher`` live here; the tuning commands live in ``bench``."""
