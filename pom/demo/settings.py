"""The demo's settings: command-line overrides of the real YAML files, not separate code.

Each dict below becomes ``--key=value`` arguments of a recipe (:func:`pom.demo.pipeline.overrides`):
:data:`MODEL` of both stages (a checkpoint only loads into the same sizes), :data:`PRETRAIN` of
``recipes/LibriSpeech/pretrain/train.py hparams/pretrain/pom.yaml``, :data:`FINETUNE` of
``recipes/LibriSpeech/finetune/train.py hparams/finetune/pom.yaml`` and :data:`LM` of the second
test pass with the n-gram LM. The README's ``make demo`` section quotes these numbers
(``tests/test_demo_readme.py`` checks that they agree).

Example
-------
>>> FINETUNE["number_of_epochs"] > 0 and PRETRAIN["optimizer_step_limit"] > 0
True
"""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PRETRAIN_SCRIPT = os.path.join(ROOT, "recipes", "LibriSpeech", "pretrain", "train.py")
FINETUNE_SCRIPT = os.path.join(ROOT, "recipes", "LibriSpeech", "finetune", "train.py")
MIXER = "pom"  # the mixer of plain `make demo`

#: Size of the synthetic corpus (hours of audio, all seven splits).
DEFAULT_HOURS = 5.0

#: Encoder sizes, shared by both stages (a checkpoint only loads into the same sizes).
MODEL = {
    "d_model": 144,
    "num_layers": 4,
    "d_ffn": 576,
    "kernel_size": 15,
    "cnn_channels": "(32,32)",
    "cnn_output_size": 640,
    "dropout": 0.1,
    # Per-utterance normalisation (the paper's recipes: global). On this corpus, whose *-other splits
    # are noisy at 5-20 dB SNR, the global statistics gave 55 % CER on test-other against 44 % per utterance.
    "norm_type": "sentence",
}
#: BEST-RQ pre-training on the CPU: small dynamic batches (many steps), short warm-up, no
#: validation pass (its masked-prediction loss on dev-clean is not used by the demo).
PRETRAIN = {
    "precision": "fp32",
    "num_workers": 0,
    "max_batch_len": 30,
    "train_num_buckets": 20,
    "global_batch_seconds": 30,  # = max_batch_len: no gradient accumulation
    "lr": 0.002,
    "warmup_steps": 100,
    "optimizer_step_limit": 500,
    "number_of_epochs": 100,
    "avoid_if_shorter_than": 0.5,
    "ckpt_interval_minutes": 0,
    "log_interval": 50,
    "valid_csv": "null",
}
#: The labelled training splits of the fine-tuning: LibriSpeech's clean 460 h subset
#: (train-clean-100 + train-clean-360), here 2.5 h of the 5 h corpus.
FINETUNE_SPLITS = ["train-clean-100", "train-clean-360"]
#: CTC fine-tuning (characters) on :data:`FINETUNE_SPLITS`, without augmentation or
#: dropout: at this budget the small model underfits, and more distinct labelled speech
#: helps more than augmenting less of it. Validation CER after 3 epochs of the 2.5 h: 25.3 %;
#: after 6 epochs of train-clean-100 alone (1 h): 28.3 % (training loss already below the
#: validation loss), 28.7 % with speed perturbation and chunk dropping. SpeechBrain's frequency
#: dropping also took a fifth of the fine-tuning time on the CPU (a 101-tap convolution set up
#: again for every new batch shape).
#: Tests decode greedily: CTC beam search without an LM (beam 10) cost about half a training
#: epoch on the four splits for about one CER point. The LM pass (:data:`LM`) uses beam search.
FINETUNE = {
    "precision": "fp32",
    "num_workers": 0,
    "train_splits": "[" + ", ".join(FINETUNE_SPLITS) + "]",
    "max_batch_len": 20,
    "num_buckets": 10,
    "sorting": "random",
    "lr": 0.002,
    "lr_encoder": 0.001,
    "dnn_neurons": 256,
    "dropout": 0.0,
    "dnn_dropout": 0.0,
    "augment": False,
    "number_of_epochs": 4,
    "test_decoding": "greedy",
    "ckpt_interval_minutes": 0,
}

#: Test-time decoding with the n-gram LM (alpha and beta chosen on the synthetic dev-clean),
#: on the test splits (:data:`LM_TEST_SPLITS`, unless --finetune gives test_splits).
LM_TEST_SPLITS = "[test-clean, test-other]"
LM = {
    "test_decoding": "beam",
    "beam_size": 15,
    "lm_alpha": 0.5,
    "lm_beta": 1.0,
}
LM_ORDER = 4
#: The training splits the LM is trained on (their transcripts; never dev/test).
LM_TRAIN_SPLITS = ["train-clean-100", "train-clean-360", "train-other-500"]

#: The efficiency plot at the end: encoders alone at the demo's sizes (parameter-matched),
#: one forward of random features per length, each in its own process
#: (pom.measure.encoders; time and peak memory do not depend on the weights).
#: MHA is the paper's MHA baseline, SpeechBrain's Conformer attention (RelPosMHAXL), whose
#: attention scores grow with the square of the length (at 5 min: 58 s and 9 GB against PoM's
#: 0.7 s and 0.7 GB on 2 cores, hence 2 min here).
EFFICIENCY_ENCODERS = ["pom", "relposmhaxl"]
EFFICIENCY_SECONDS = [10, 30, 60, 120]
