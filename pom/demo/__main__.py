"""``python -m pom.demo``: runs the demo (:mod:`pom.demo`)."""

import sys

from pom.demo.pipeline import main

if __name__ == "__main__":
    sys.exit(main())
