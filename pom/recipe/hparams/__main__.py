"""``python -m pom.recipe.hparams FILE [--key=value ...]``: one experiment as one YAML file
(:mod:`pom.recipe.experiment_yaml`)."""

import sys

from pom.recipe.experiment_yaml import main

if __name__ == "__main__":
    sys.exit(main())
