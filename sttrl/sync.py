"""``python -m sttrl.sync``: the command-line name kept for :mod:`sttrl.outward.sync`, where the code lives."""

import sys

from sttrl.outward.sync import main

if __name__ == "__main__":
    sys.exit(main())
