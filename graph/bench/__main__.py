"""``python -m graph.bench``: see :mod:`graph.bench.cli`."""

import sys

from graph.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
