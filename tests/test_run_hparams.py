"""Every run's ``hyperparams.yaml`` loads again: written as the recipes write it
(:func:`pom.recipe.hparams.save_run_hparams`, after hyperpyyaml has loaded the
experiment file in the same process), for every experiment file and both
stages, then loaded in a fresh process with
:func:`pom.recipe.hparams.load_run_hparams`."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import torch

from pom.parameters import count_parameters
from pom.recipe.hparams import RUN_HPARAMS, load_hparams, load_run_hparams, resolve_hparams_file, save_run_hparams

ROOT = pathlib.Path(__file__).resolve().parents[1]
HPARAMS = ROOT / "hparams"
STAGES = ("pretrain", "finetune")
EXPERIMENTS = sorted(p.stem for p in (HPARAMS / "pretrain").glob("*.yaml") if p.stem != "base")


def overrides(stage, tmp_path, name):
    """As on a command line: the data, an output folder, and (fine-tuning) one encoder layer, to load fast."""
    text = f"data_folder: {tmp_path}\noutput_folder: {tmp_path / 'runs' / stage / name}\n"
    if stage == "finetune":
        text += "pretrained_path: none\nnum_layers: 1\n"
    return text


def save_as_the_recipe(stage, name, tmp_path, extra=""):
    """hyperparams.yaml of a run, written as the recipes write it: after load_hparams in this process."""
    hparams_file = HPARAMS / stage / f"{name}.yaml"
    text = overrides(stage, tmp_path, name) + extra
    if stage == "pretrain":
        with torch.device("meta"):
            hparams = load_hparams(hparams_file, text)
    else:
        hparams = load_hparams(hparams_file, text)
    folder = hparams["output_folder"]
    os.makedirs(folder, exist_ok=True)
    save_run_hparams(folder, *resolve_hparams_file(hparams_file, text))
    return folder, hparams


LOADER = """
import json, sys
import torch
from pom.parameters import count_parameters
from pom.recipe.hparams import load_run_hparams

counts = {}
for stage, folder in json.loads(sys.argv[1]):
    if stage == "pretrain":  # the real constructors on the meta device: no memory
        with torch.device("meta"):
            h = load_run_hparams(folder)
        counts[folder] = count_parameters(h["CNN"], h["encoder"], h["head"])
    else:
        h = load_run_hparams(folder)
        counts[folder] = count_parameters(h["pt_model"], h["model"])
print(json.dumps(counts))
"""


def test_every_experiment_reloads_in_a_fresh_process(tmp_path):
    runs, expected = [], {}
    for stage in STAGES:
        for name in EXPERIMENTS:
            folder, hparams = save_as_the_recipe(stage, name, tmp_path)
            runs.append((stage, folder))
            parts = ("CNN", "encoder", "head") if stage == "pretrain" else ("pt_model", "model")
            expected[folder] = count_parameters(*(hparams[p] for p in parts))
            text = pathlib.Path(folder, RUN_HPARAMS).read_text()
            assert "cnn_channels: (128, 32)" in text and "out_channels: (128, 32)" in text  # written in full
    # the tiny runs of the tests give the tuple on the command line
    folder, hparams = save_as_the_recipe("pretrain", "relposmhaxl", tmp_path / "tiny", "cnn_channels: (8,8)\n")
    runs.append(("pretrain", folder))
    expected[folder] = count_parameters(hparams["CNN"], hparams["encoder"], hparams["head"])

    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", LOADER, json.dumps(runs)], cwd=ROOT, capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == expected


def test_the_saved_file_is_the_run_and_follows_its_folder(tmp_path):
    folder, hparams = save_as_the_recipe("finetune", "pom", tmp_path, "cnn_channels: (8,8)\nlr: 0.01\n")
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(folder, moved)
    shutil.rmtree(folder)
    loaded = load_run_hparams(str(moved), {"test_decoding": "greedy"})
    assert loaded["cnn_channels"] == (8, 8) and loaded["lr"] == 0.01 and loaded["test_decoding"] == "greedy"
    assert loaded["encoder_config"].config == hparams["encoder_config"].config
    # the run's paths are read in its folder, wherever it is now
    assert loaded["output_folder"] == str(moved) and loaded["save_folder"] == str(moved / "save")
    assert str(loaded["checkpointer"].checkpoints_dir) == str(moved / "save")
    assert not os.path.exists(folder)
    with pytest.raises(KeyError):
        load_run_hparams(str(moved), {"no_such_key": 1})
    with pytest.raises(FileNotFoundError, match="not the output folder of a recipe run"):
        load_run_hparams(str(tmp_path))
