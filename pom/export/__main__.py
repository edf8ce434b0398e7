"""``python -m pom.export RUN OUT``: see :mod:`pom.export`."""

import sys

from pom.export import main

if __name__ == "__main__":
    sys.exit(main())
