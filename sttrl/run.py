"""``python -m sttrl.run``: the command-line name kept for :mod:`sttrl.control.run`, where the code lives."""

import sys

from sttrl.control.run import main

if __name__ == "__main__":
    sys.exit(main())
