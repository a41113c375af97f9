"""``python -m emdloss``: the same as the ``emdloss`` command."""

import sys

from emdloss.cli import main

if __name__ == "__main__":
    sys.exit(main())
