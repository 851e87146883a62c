"""Local language models for controllers: resolving and loading them, and JSON-schema-constrained decoding."""
