"""``python -m sttrl.teacher``: the command-line name kept for :mod:`sttrl.control.teacher`, where the code lives."""

import sys

from sttrl.control.teacher import main

if __name__ == "__main__":
    sys.exit(main())
