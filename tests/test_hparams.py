"""The experiment files: every paper row is runnable at its published size, both
stages read one encoder file, and the global batch does not depend on the GPU count."""

import pathlib

import pytest
import torch

from pom.mixers import MIXERS
from pom.parameters import count_parameters
from pom.recipe.batching import global_batch_plan
from pom.recipe.hparams import load_hparams, resolve_hparams_file
from pom.recipe.paper import PAPER_ROWS, commands, find_row
from pom.results import main as results_main

HPARAMS = pathlib.Path(__file__).resolve().parents[1] / "hparams"
EXPERIMENTS = sorted(p.stem for p in (HPARAMS / "pretrain").glob("*.yaml") if p.stem != "base")
SIZE_CLASS = {"~95 M": 95e6, "~315 M": 315e6}


def load(stage, experiment, tmp_path, extra=""):
    """The experiment's hparams; pre-training on the meta device (the real
    constructors, no memory), fine-tuning (whose augmentation computes
    resampling kernels) on the CPU with one encoder layer."""
    overrides = f"data_folder: {tmp_path}\n{extra}"
    if stage == "finetune":
        return load_hparams(
            HPARAMS / stage / f"{experiment}.yaml", overrides + "pretrained_path: none\nnum_layers: 1\n"
        )
    with torch.device("meta"):
        return load_hparams(HPARAMS / stage / f"{experiment}.yaml", overrides)


def test_every_experiment_has_both_stages_and_one_encoder_file():
    finetune = sorted(p.stem for p in (HPARAMS / "finetune").glob("*.yaml") if p.stem != "base")
    encoders = sorted(p.stem for p in (HPARAMS / "encoders").glob("*.yaml"))
    assert EXPERIMENTS == finetune == encoders
    for stage in ("pretrain", "finetune"):
        for name in EXPERIMENTS:
            base, _ = resolve_hparams_file(HPARAMS / stage / f"{name}.yaml")
            assert pathlib.Path(base) == HPARAMS / stage / "base.yaml"
            assert f"../encoders/{name}.yaml" in (HPARAMS / stage / f"{name}.yaml").read_text()


def test_every_registered_mixer_has_an_experiment(tmp_path):
    used = {load("pretrain", name, tmp_path)["mixer"] for name in EXPERIMENTS}
    assert set(MIXERS) <= used, f"mixers without an experiment file: {set(MIXERS) - used}"


@pytest.mark.parametrize("row", PAPER_ROWS, ids=lambda r: r.experiment)
def test_paper_row_instantiates_at_its_published_size(row, tmp_path):
    pre = load("pretrain", row.experiment, tmp_path)
    fine = load("finetune", row.experiment, tmp_path)
    count = count_parameters(pre["CNN"], pre["encoder"], pre["head"])
    assert abs(count / 1e6 - row.params_m) < 0.01 * row.params_m, f"{count / 1e6:.2f} M, row says {row.params_m}"
    assert abs(count / SIZE_CLASS[row.size] - 1) < 0.07, f"{count / 1e6:.1f} M is not {row.size}"
    # one source of truth: both stages describe the same encoder (fine-tuning loaded with one layer here)
    _, merged = resolve_hparams_file(HPARAMS / "finetune" / f"{row.experiment}.yaml")
    assert merged["num_layers"] == pre["num_layers"]
    same = {k: v for k, v in pre["encoder_config"].config.items() if k != "num_layers"}
    assert same == {k: v for k, v in fine["encoder_config"].config.items() if k != "num_layers"}
    # every experiment has its own output folders
    assert pre["output_folder"] == f"results/pretrain/{row.experiment}/1000"
    assert fine["output_folder"] == f"results/finetune/{row.experiment}/1000"
    for command in commands(row):
        assert "hparams/" in command and f"{row.experiment}.yaml" in command


def test_paper_settings_follow_their_sources(tmp_path):
    pom = load("pretrain", "pom", tmp_path)
    # the authors' BEST-RQ_pom_example.yaml
    assert (pom["lr"], pom["weight_decay"], pom["precision"], pom["norm_type"]) == (0.001, 0.1, "fp16", "global")
    assert (pom["global_batch_seconds"], pom["max_batch_len"], pom["train_num_buckets"]) == (5600, 1400, 150)
    assert (pom["number_of_epochs"], pom["optimizer_step_limit"], pom["norm_update_until_epoch"]) == (70, 200000, 4)
    mamba = load("pretrain", "mamba", tmp_path)  # whettenr/brq-att-alt-exp
    assert (mamba["global_batch_seconds"], mamba["precision"], mamba["optimizer_step_limit"]) == (6400, "bf16", 205000)
    assert load("pretrain", "mamba_large", tmp_path)["layerdrop_prob"] == 0.1
    ft = load("finetune", "pom", tmp_path)
    assert (ft["global_batch_size"], ft["batch_size"], ft["precision"], ft["lr"], ft["lr_encoder"]) == (
        12,
        6,
        "fp16",
        0.0003,
        0.00005,
    )
    assert (ft["beam_size"], ft["lm_alpha"], ft["lm_beta"]) == (200, 0.8, 1.2)
    ft_mamba = load("finetune", "mamba", tmp_path)
    assert (ft_mamba["global_batch_size"], ft_mamba["precision"], ft_mamba["lr"]) == (6, "fp32", 0.003)


@pytest.mark.parametrize("experiment", ["pom", "mamba"])
def test_the_global_batch_does_not_depend_on_the_gpu_count(experiment, tmp_path):
    hp = load("pretrain", experiment, tmp_path)
    plans = [global_batch_plan(hp["global_batch_seconds"], hp["max_batch_len"], world) for world in (1, 2, 3, 8)]
    assert [plan.global_batch for plan in plans] == pytest.approx([hp["global_batch_seconds"]] * len(plans))
    assert all(plan.per_device <= hp["max_batch_len"] for plan in plans)
    # on the authors' 2 GPUs (or 8 for Whetten et al.), exactly their batch and accumulation
    authors = plans[1] if experiment == "pom" else plans[3]
    assert (authors.per_device, authors.grad_accumulation_factor) == (hp["max_batch_len"], 2)
    ft = load("finetune", experiment, tmp_path)
    sizes = [global_batch_plan(ft["global_batch_size"], ft["batch_size"], w, integer=True) for w in (1, 2, 3, 6)]
    assert {plan.global_batch for plan in sizes} == {ft["global_batch_size"]}


def test_results_paper_lists_every_row_with_its_commands(capsys):
    assert results_main(["--paper", "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    for row in PAPER_ROWS:
        assert f"| {row.model} | {row.size} | {row.test_clean:.2f} |" in out
        for command in commands(row):
            assert command in out
    assert find_row("PoM", "~315 M").experiment == "pom_large"


def test_new_options_default_to_the_paper_runs(tmp_path):
    """Tracking, checkpoint averaging and the test CSVs: off / as before unless asked for; the trackers
    are only named in the YAML (loading a run's hyperparams never opens a writer or a W&B run)."""
    for stage in ("pretrain", "finetune"):
        hp = load(stage, "pom", tmp_path)
        assert (hp["use_tensorboard"], hp["use_wandb"]) == (False, False)
        assert hp["tensorboard_logger"].keywords["save_dir"] == f"{hp['output_folder']}/tensorboard"
        assert hp["wandb_logger"].keywords["project"] == "pom-speech"
    ft = load("finetune", "pom", tmp_path)
    assert (ft["avg_checkpoints"], ft["avg_checkpoints_select"], ft["test_csv"]) == (1, "best", None)
    assert ft["output_neurons"] == 29  # LibriSpeech's characters; the recipe sizes it from the train transcripts
