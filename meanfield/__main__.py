"""``python -m meanfield``: the same command as ``meanfield`` (see :mod:`meanfield.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
