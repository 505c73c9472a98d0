"""``python -m medseg`` works like the ``medseg`` command."""

import sys

from medseg.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
