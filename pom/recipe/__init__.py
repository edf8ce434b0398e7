"""Support code of the recipes in ``recipes/LibriSpeech`` (the models are in :mod:`pom`).

* :mod:`pom.recipe.hparams` -- YAML loading (an experiment file merged over its
  ``base:`` files) and the run record that rebuilds a fine-tuned model.
* :mod:`pom.recipe.experiment_yaml` -- one experiment printed as one YAML file
  (``python -m pom.recipe.hparams FILE``).
* :mod:`pom.recipe.checks` -- up-front checks of a run's settings, one line per problem.
* :mod:`pom.recipe.checkpoints` -- kill-safe checkpoints, the encoder
  configuration (and its one diff), DDP fingerprints.
* :mod:`pom.recipe.files` -- atomic file writes (every JSON the recipes write).
* :mod:`pom.recipe.batching` -- the global batch from the number of GPUs.
* :mod:`pom.recipe.pretrained` -- finding, checking and loading a pre-trained encoder.
* :mod:`pom.recipe.tokens` -- the CTC output units (characters or SentencePiece).
* :mod:`pom.recipe.paper` -- the paper's rows and the experiment behind each.
"""
