"""``python -m sttrl.judge RUN_DIR``: see :mod:`sttrl.judge.scoring`."""

import sttrl.preload  # noqa: F401 - first: bounds the BLAS thread pools, loads numpy under the memory guard

# isort: split
import shlex
import sys

from sttrl.native import EPISODE_LIBRARIES, load_guarded


def run() -> int:
    """Load the numeric libraries under the memory guard (sttrl.native), then judge."""
    load_guarded(EPISODE_LIBRARIES, shlex.join(["python", "-m", "sttrl.judge", *sys.argv[1:]]), "the numeric libraries")
    # torch and transformers: imported by the judge only after the guarded load above
    from sttrl.judge.scoring import main

    return main()


if __name__ == "__main__":
    sys.exit(run())
