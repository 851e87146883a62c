"""Recognising a real allocation failure, on GPU and on CPU.

torch raises ``torch.OutOfMemoryError`` for CUDA. On CPU it has no such type: its ``DefaultCPUAllocator``
raises a plain ``RuntimeError`` ("[enforce fail at alloc_cpu.cpp:…] DefaultCPUAllocator: can't allocate
memory: you tried to allocate N bytes. Error code 12 (Cannot allocate memory)", measured with torch
2.13.0 under ``prlimit --as``), and NumPy and Python raise ``MemoryError``. Types are checked first;
text is matched only for the ``RuntimeError`` that torch gives no type for.

Inside a training block an allocation failure is an ``oom`` transition with rollback (sttrl.train.trainer).
Anywhere else the process cannot go on safely: the entry points print :func:`resume_line` and exit.
:func:`ensure_writable_dir` turns an unwritable run directory into one line instead of a traceback.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from sttrl.errors import RunDirectoryError

# oneDNN (torch's CPU kernels) reports a scratchpad it could not allocate as "could not create a primitive"
# (seen under an address-space limit in loss.backward()); a non-memory cause would repeat on every block as a
# visible oom transition with this message, never a silently wrong number.
_CPU_ALLOCATOR_TEXT = (
    "defaultcpuallocator: can't allocate memory",
    "cannot allocate memory",
    "out of memory",
    "could not create a primitive",
)


def is_allocation_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a failed memory allocation (CUDA, torch's CPU allocator, NumPy or Python)."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    if type(exc) is RuntimeError:  # torch's CPU allocator (c10::Error) has no type of its own
        text = str(exc).lower()
        return any(t in text for t in _CPU_ALLOCATOR_TEXT)
    return False


def allocation_message(exc: BaseException) -> str:
    """The useful part of an allocation error, one line, at most 200 characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    marker = text.find("DefaultCPUAllocator")
    if marker >= 0:
        text = text[marker:]
    return f"{type(exc).__name__}: {text}"[:200]


def resume_line(exc: BaseException, resume: str, verb: str = "resume with") -> str:
    """One line for an allocation failure the episode cannot turn into a transition: what failed, how to resume
    (``verb`` says what ``resume`` does)."""
    why = allocation_message(exc)
    return f"out of memory where the episode cannot continue ({why}); free memory, then {verb}: {resume}"


def ensure_writable_dir(path: Path) -> Path:
    """Create ``path`` if needed and prove it writable (a temp file made and removed), or raise one clear line."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise RunDirectoryError(
            f"run directory {path} is not writable ({reason}: {exc.filename or path}); choose another with --run-dir "
            "or run.out_dir, or fix its permissions"
        ) from None
    return path
