"""``python -m sttrl.learn``: the command-line name kept for :mod:`sttrl.policy.learn`, where the code lives."""

import sys

from sttrl.policy.learn import main

if __name__ == "__main__":
    sys.exit(main())
