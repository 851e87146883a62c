"""Typed exceptions raised by sttrl. The CLIs turn each into one clear line and a non-zero exit.

Every user-facing error derives from ``ValueError``: the LangGraph server passes the message of
built-in exception types through to its clients and hides any other class behind
"An internal error occurred".
"""

from __future__ import annotations


class SttrlError(ValueError):
    """Base class of every error sttrl raises on purpose."""


class ConfigError(SttrlError):
    """A config file, preset or override is invalid; the message names the field and what is valid."""


class AgentConfigError(ConfigError):
    """The chosen agent cannot be built: unknown name, bad model string, missing package or API key."""


class DataError(SttrlError):
    """A corpus, audio file, manifest or hub dataset is missing or malformed."""


class SystemDependencyError(SttrlError):
    """A system program the project needs (espeak-ng) is missing; the message says how to install it."""


class ModelError(SttrlError):
    """A model could not be built, converted or loaded."""


class IntegrityError(SttrlError):
    """A file's hash does not match the one recorded for it."""


class CheckpointError(SttrlError):
    """A training checkpoint is missing, incomplete or inconsistent."""


class HiddenSplitAccessError(SttrlError):
    """Code other than the judge tried to open the hidden split."""


class RunDirectoryError(SttrlError):
    """A run directory cannot be created or written (read-only, no permission, not a directory)."""


class SinkError(SttrlError):
    """A sink (object store, pre-signed URL) cannot be reached or written; the message never holds a credential."""


class ForkError(SttrlError):
    """A fork that cannot be made: unknown thread, step outside its history, action not enabled, id taken."""


class MissingExtraError(ConfigError):
    """An optional package is not installed; the message names the pip extra and the command that installs it."""


class SessionError(SttrlError):
    """An outside session (an OpenEnv client, a TRL rollout) asked for what its episode cannot do now: a step before
    a reset or after the end, a judge before the end, a taken episode id."""
