"""Optional packages and the pip extras that install them: one check, one error, one line.

sttrl's core installs what an offline episode needs; everything else is an extra of ``pyproject.toml``
(``graph``, ``bench``, ``ray``, ``ct2``, ``sinks``, ``track``, ``local-llm``, …). Code that needs an optional
package asks for it here instead of importing it bare, so a missing package is a :class:`MissingExtraError`
whose message names the extra and the command that installs it, never an ``ImportError`` traceback::

    ray = load("ray", extra="ray", what="--executor ray")
    # MissingExtraError: --executor ray needs the 'ray' extra: pip install -e '.[ray]'

The CLIs print a :class:`~sttrl.errors.SttrlError` as one line; an error raised while a module is imported
(before any ``main`` can catch it) is printed as one line by the hook this module installs when it raises.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable
from types import ModuleType, TracebackType

from sttrl.errors import MissingExtraError


def install_command(extra: str) -> str:
    """The command that installs ``extra`` into the current checkout."""
    return f"pip install -e '.[{extra}]'"


def message(extra: str, what: str, hint: str | None = None) -> str:
    """``<what> needs the '<extra>' extra: pip install -e '.[<extra>]'`` (and the hint, when given)."""
    text = f"{what} needs the '{extra}' extra: {install_command(extra)}"
    return f"{text} ({hint})" if hint else text


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package of a dotted name is missing
        return False


def missing(modules: Iterable[str]) -> list[str]:
    """The modules of ``modules`` that are not installed (a dotted name imports its parents, nothing else)."""
    return [m for m in modules if not _installed(m)]


def require(*modules: str, extra: str, what: str | None = None, hint: str | None = None) -> None:
    """Raise :class:`MissingExtraError` unless every module of ``modules`` is installed."""
    absent = missing(modules)
    if absent:
        _raise(MissingExtraError(message(extra, what or ", ".join(absent), hint)))


def load(module: str, *, extra: str, what: str | None = None, hint: str | None = None) -> ModuleType:
    """Import ``module`` (a dotted name is fine); a missing package is a :class:`MissingExtraError`."""
    require(module, extra=extra, what=what, hint=hint)
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # installed but one of its own dependencies is not: the same remedy
        _raise(MissingExtraError(f"{message(extra, what or module, hint)}; import failed: {exc}"))
        raise  # unreachable: _raise always raises


def _raise(error: MissingExtraError) -> None:
    _install_hook()
    raise error


_previous_hook: Callable[[type[BaseException], BaseException, TracebackType | None], object] | None = None


def _hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    """Uncaught :class:`MissingExtraError` (an import-time check): one line; anything else as before."""
    if isinstance(value, MissingExtraError):
        print(f"error: {value}", file=sys.stderr)
        return
    (_previous_hook or sys.__excepthook__)(kind, value, tb)


def _install_hook() -> None:
    global _previous_hook
    if sys.excepthook is not _hook:
        _previous_hook = sys.excepthook
        sys.excepthook = _hook
