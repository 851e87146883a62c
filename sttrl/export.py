"""``python -m sttrl.export``: the command-line name kept for :mod:`sttrl.outward.export`, where the code lives."""

import sys

from sttrl.outward.export import main

if __name__ == "__main__":
    sys.exit(main())
