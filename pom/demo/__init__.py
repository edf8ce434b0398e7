"""``make demo``: the whole job, small, on the synthetic corpus.

1. synthesizes the espeak-ng corpus with LibriSpeech's layout
   (:mod:`pom.data.synthetic`; skipped when already there);
2. builds a word 4-gram LM from the training transcripts (:mod:`pom.lm`; when ``kenlm`` is
   installed, ``--no-lm`` skips it);
3. pre-trains a small PoM Conformer with BEST-RQ on all training splits
   (``recipes/LibriSpeech/pretrain/train.py hparams/pretrain/pom.yaml``);
4. fine-tunes it with CTC on train-clean-100 + train-clean-360 and evaluates dev/test with greedy
   decoding (``recipes/LibriSpeech/finetune/train.py hparams/finetune/pom.yaml``), then decodes the
   test splits again with CTC beam search and the LM;
5. prints the WER/CER tables (``python -m pom.results``) and the wall-clock and CPU time of each
   stage;
6. measures time and memory of the demo's PoM encoder against a parameter-matched
   MHA encoder (RelPosMHAXL) from 10 s to 2 minutes of input and plots them
   (``benchmarks/long_recordings.py``; ``--no-efficiency`` skips it), then exports
   the model for SpeechBrain's ``EncoderASR`` and prints where the outputs are.

The small sizes are command-line overrides of the real YAML files (:mod:`pom.demo.settings`),
not separate code::

    python -m pom.demo [--out results/demo] [--hours 5] [--compare-random] [--no-lm]

``--mixers pom relposmhaxl summarymixing`` (any registry names) runs the same
pipeline for each mixer on one shared corpus and LM, each encoder
parameter-matched to the demo's PoM (:mod:`pom.demo.mixers`), and prints the paper's table in
miniature: WER and CER per split with and without the LM, pre-training and fine-tuning time, peak
memory and parameters. Outputs then go to ``<out>/<mixer>/``.

``--compare-random`` also fine-tunes the same model from a random encoder
(same settings and seed), the comparison the test suite makes.

The modules: :mod:`pom.demo.settings` (the overrides), :mod:`pom.demo.pipeline` (the stages),
:mod:`pom.demo.mixers` (parameter matching, the comparison table), :mod:`pom.demo.report` (what is
printed and written at the end).

Authors
 * pom-speech contributors 2025
"""

from pom.demo.mixers import matched_model, model_overrides
from pom.demo.pipeline import lm_available, main, run_mixer
from pom.demo.settings import (
    DEFAULT_HOURS,
    EFFICIENCY_ENCODERS,
    EFFICIENCY_SECONDS,
    FINETUNE,
    LM,
    LM_ORDER,
    LM_TEST_SPLITS,
    MODEL,
    PRETRAIN,
)

__all__ = [
    "DEFAULT_HOURS",
    "EFFICIENCY_ENCODERS",
    "EFFICIENCY_SECONDS",
    "FINETUNE",
    "LM",
    "LM_ORDER",
    "LM_TEST_SPLITS",
    "MODEL",
    "PRETRAIN",
    "lm_available",
    "main",
    "matched_model",
    "model_overrides",
    "run_mixer",
]
