"""The rows of the PoM paper's WER tables and the experiment behind each.

*Polynomial Mixing for Efficient Self-supervised Speech Encoders* (Feillet,
Whetten, Picard, Allauzen, ICASSP 2026) reports WER after BEST-RQ
pre-training on LibriSpeech 960 h and CTC fine-tuning on train-clean-100, for
~95 M and ~315 M encoders, on test-clean and test-other, without and with the
LibriSpeech 4-gram LM. Rows marked (*) are quoted from Whetten et al. (2024).

Every row is one experiment name: ``hparams/pretrain/<experiment>.yaml`` then
``hparams/finetune/<experiment>.yaml``, both reading
``hparams/encoders/<experiment>.yaml``. :func:`commands` gives the three
commands that reproduce a row (pre-training, fine-tuning, LM test).

Example
-------
>>> row = find_row("pom", "~95 M")
>>> row.experiment, row.test_clean, row.test_other_lm
('pom', 8.31, 13.62)
>>> print(commands(row)[0])
torchrun --nproc-per-node=2 recipes/LibriSpeech/pretrain/train.py hparams/pretrain/pom.yaml --data_folder=$LS
"""

from dataclasses import dataclass

#: Where each setting of a row comes from (cited in the YAML files).
SOURCES = {
    "PoM": "the PoM authors' files (EvaJF/pom4speech BEST-RQ_pom_example.yaml and "
    "train_sb_BEST-RQ_pom_example.yaml = SpeechBrain 1.0.3's BEST-RQ recipe, 1400 s x 2 GPUs x 2, 70 epochs)",
    "PoM setup": "the PoM authors' setup (as PoM) with the row's encoder; no file of theirs for this row",
    "Whetten": "whettenr/brq-att-alt-exp (Whetten et al. 2024): 400 s x 8 GPUs x 2, bf16, 205k steps; "
    "fine-tuning on one GPU in fp32",
}


@dataclass(frozen=True)
class PaperRow:
    """One published row: the model, its size class, the experiment that
    reproduces it, the published WER (%) and where its settings come from."""

    model: str
    size: str  # "~95 M" or "~315 M"
    experiment: str  # hparams/{pretrain,finetune,encoders}/<experiment>.yaml
    test_clean: float
    test_clean_lm: float
    test_other: float
    test_other_lm: float
    source: str  # a key of SOURCES
    params_m: float  # CNN + encoder + 8192-way BEST-RQ head here, millions
    gpus: int = 2  # processes the authors pre-trained with (the global batch does not depend on it)
    note: str = ""

    @property
    def published(self):
        return (self.test_clean, self.test_clean_lm, self.test_other, self.test_other_lm)


PAPER_ROWS = (
    PaperRow("RelPosMHA", "~95 M", "relposmhaxl", 7.96, 4.89, 17.61, 12.13, "PoM setup", 94.03),
    PaperRow(
        "RoPE MHA",
        "~95 M",
        "ropemha",
        8.06,
        4.90,
        17.53,
        11.98,
        "PoM setup",
        90.03,
        note="SpeechBrain's sizes with RoPEMHA",
    ),
    PaperRow(
        "regular MHA",
        "~95 M",
        "mha",
        8.59,
        5.37,
        19.44,
        13.47,
        "PoM setup",
        90.05,
        note="SpeechBrain's sizes with regular MHA",
    ),
    PaperRow("PoM", "~95 M", "pom", 8.31, 5.42, 19.06, 13.62, "PoM", 95.61),
    PaperRow(
        "SummaryMixing",
        "~95 M",
        "summarymixing",
        9.79,
        5.93,
        22.80,
        15.84,
        "PoM setup",
        94.11,
        note="official Conformer SummaryMixing, d_model 632",
    ),
    PaperRow("Mamba (*)", "~95 M", "mamba", 7.61, 5.50, 19.97, 15.37, "Whetten", 94.23, gpus=8),
    PaperRow("HyperConformer (*)", "~95 M", "hypermixing", 8.22, 5.77, 19.29, 15.03, "Whetten", 94.32, gpus=8),
    PaperRow(
        "FastFormer (*)",
        "~95 M",
        "fastformer",
        9.32,
        6.82,
        22.75,
        17.95,
        "Whetten",
        93.35,
        gpus=8,
        note="d_model 592 parameter-matched (their 616 is 98.4 M with our Fastformer)",
    ),
    PaperRow(
        "RelPosMHA",
        "~315 M",
        "relposmhaxl_large",
        4.92,
        3.49,
        10.78,
        8.09,
        "PoM setup",
        313.50,
        note="the large sizes of Whetten et al. (d_model 848, 24 layers)",
    ),
    PaperRow(
        "RoPE MHA",
        "~315 M",
        "ropemha_large",
        5.13,
        3.66,
        10.99,
        8.45,
        "PoM setup",
        296.20,
        note="the large RelPosMHA sizes with RoPEMHA",
    ),
    PaperRow(
        "PoM",
        "~315 M",
        "pom_large",
        6.28,
        4.52,
        14.86,
        11.33,
        "PoM setup",
        312.90,
        note="no published size: 24 layers, d_model 688 parameter-matched to the large RelPosMHA",
    ),
    PaperRow(
        "SummaryMixing",
        "~315 M",
        "summarymixing_large",
        7.35,
        4.85,
        17.60,
        12.97,
        "PoM setup",
        313.63,
        note="d_model 976, 24 layers as Whetten et al.",
    ),
    PaperRow("Mamba (*)", "~315 M", "mamba_large", 5.59, 4.48, 15.47, 12.66, "Whetten", 314.91, gpus=8),
    PaperRow("HyperConformer (*)", "~315 M", "hypermixing_large", 5.87, 4.54, 13.13, 10.78, "Whetten", 315.44, gpus=8),
    PaperRow(
        "FastFormer (*)",
        "~315 M",
        "fastformer_large",
        13.16,
        9.89,
        31.91,
        26.75,
        "Whetten",
        312.17,
        gpus=8,
        note="d_model 880 parameter-matched (their 920 is 332.5 M with our Fastformer)",
    ),
)


def find_row(model_or_experiment, size=None):
    """The row of an experiment name (``pom_large``) or a model name and size."""
    for row in PAPER_ROWS:
        if row.experiment == model_or_experiment or (row.model == model_or_experiment and row.size == size):
            return row
    raise KeyError(f"no paper row {model_or_experiment!r} {size or ''}".strip())


def commands(row, data="$LS", lm="4-gram.arpa", seed=1000):
    """Pre-training, fine-tuning and LM-test commands that reproduce ``row``."""
    launch = f"torchrun --nproc-per-node={row.gpus} " if row.gpus > 1 else "python "
    finetune_launch = "torchrun --nproc-per-node=2 " if row.source != "Whetten" else "python "
    exp = row.experiment
    pretrained = f"results/pretrain/{exp}/{seed}"
    extra = " --find_unused_parameters" if _uses_layerdrop(row) else ""
    return (
        f"{launch}recipes/LibriSpeech/pretrain/train.py hparams/pretrain/{exp}.yaml --data_folder={data}{extra}",
        f"{finetune_launch}recipes/LibriSpeech/finetune/train.py hparams/finetune/{exp}.yaml --data_folder={data} "
        f"--pretrained_path={pretrained}",
        f"python recipes/LibriSpeech/finetune/train.py hparams/finetune/{exp}.yaml --data_folder={data} "
        f"--pretrained_path={pretrained} --kenlm_model_path={lm} "
        f"--results_file=results/finetune/{exp}/{seed}/results_lm.json",
    )


def _uses_layerdrop(row):
    """Layer drop (the large rows and the rows of Whetten et al.) leaves layers
    without gradients, which DDP must be told about."""
    return row.size == "~315 M" or row.source == "Whetten"
