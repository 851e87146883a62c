"""Quiet means quiet: the progress bars of third-party libraries, off for the rest of the process.

sttrl draws its own progress (rich) and prints it unless ``--quiet``. Libraries draw theirs with tqdm:
transformers (weights, and the GGUF de-quantization bar, which uses tqdm directly), datasets ("Creating parquet",
"Generating train split") and huggingface_hub (downloads). :func:`library_bars_off` turns off the bars each library
has a switch for (a command with a display of its own calls it); :func:`quiet` also turns off every tqdm bar a
library creates directly (a command run with ``--quiet`` calls it).
"""

from __future__ import annotations

import os
import sys
from typing import Any


def library_bars_off() -> None:
    """Turn off the bars of transformers, datasets and huggingface_hub through their own switches. A library not
    imported yet is not imported here (datasets brings pyarrow: a command under a memory limit loads it, if at all,
    where a memory failure is caught); its environment variable turns its bars off when it is imported, and
    transformers follows huggingface_hub's switch when it is imported."""
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars  # imported already: no load happens here

        disable_progress_bars()
    if "datasets" in sys.modules:
        from datasets.utils import logging as ds_logging  # imported already

        ds_logging.disable_progress_bar()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging  # imported already

        hf_logging.disable_progress_bar()


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
