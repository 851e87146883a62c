"""Quiet means quiet: the progress bars of third-party libraries, off for the rest of the process.

sttrl draws its own progress (rich) and prints it unless ``--quiet``. Libraries draw theirs with tqdm:
transformers (weights, and the GGUF de-quantization bar, which uses tqdm directly), datasets ("Creating parquet",
"Generating train split") and huggingface_hub (downloads). :func:`library_bars_off` turns off the bars each library
has a switch for (a command with a display of its own calls it); :func:`quiet` also turns off every tqdm bar a
library creates directly (a command run with ``--quiet`` calls it).
"""

from __future__ import annotations

from typing import Any


def library_bars_off() -> None:
    """Turn off the bars of transformers, datasets and huggingface_hub through their own switches."""
    from datasets.utils import logging as ds_logging  # libraries of the core, imported only when asked
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    ds_logging.disable_progress_bar()
    disable_progress_bars()


def quiet() -> None:
    """:func:`library_bars_off`, and every tqdm bar created from now on is disabled (``disable=True``)."""
    library_bars_off()
    _tqdm_off()


DISABLE_POSITION = 10  # tqdm.__init__(iterable, desc, total, leave, file, ncols, mininterval, maxinterval,
# miniters, ascii, disable, ...): ``disable`` is its 11th positional parameter


def _tqdm_off() -> None:
    """tqdm has no switch after it is imported (``TQDM_DISABLE`` is read when tqdm itself is imported, which a
    library may have done already), so every bar's constructor is given ``disable=True``; subclasses (tqdm.auto,
    huggingface_hub's) call this constructor too."""
    from tqdm import std  # a dependency of transformers, datasets and huggingface_hub

    if getattr(std.tqdm, "_sttrl_quiet", False):
        return
    init = std.tqdm.__init__

    def quiet_init(self: Any, *args: Any, **kwargs: Any) -> None:
        if len(args) > DISABLE_POSITION:
            args = (*args[:DISABLE_POSITION], True, *args[DISABLE_POSITION + 1 :])
        else:
            kwargs["disable"] = True
        init(self, *args, **kwargs)

    std.tqdm.__init__ = quiet_init  # type: ignore[method-assign]
    std.tqdm._sttrl_quiet = True  # type: ignore[attr-defined]
