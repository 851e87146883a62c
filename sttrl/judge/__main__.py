"""``python -m sttrl.judge RUN_DIR``: see :mod:`sttrl.judge.scoring`."""

import sys

from sttrl.judge.scoring import main

if __name__ == "__main__":
    sys.exit(main())
