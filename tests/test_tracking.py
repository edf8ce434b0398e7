"""Experiment tracking in both recipes: use_tensorboard writes SpeechBrain's
TensorBoard event files with numbers only; use_wandb without the wandb package
is a one-line error before any work; W&B is never needed otherwise."""

import glob
import os
import sys

import pytest
import torch
from finetune_helpers import FINETUNE, PRETRAIN, TINY_MODEL, TINY_PRETRAIN, recipe_check, run

from pom.recipe.tracking import Trackers, missing_packages, numeric


def scalars(folder):
    """``{tag: [values]}`` of the TensorBoard event files under ``folder``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = glob.glob(os.path.join(folder, "events.out.tfevents.*"))
    assert events, f"no event file in {folder}"
    found = {}
    for path in events:
        acc = EventAccumulator(path)
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            found.setdefault(tag, []).extend(e.value for e in acc.Scalars(tag))
    return found


def test_pretraining_writes_tensorboard_events(synthetic_librispeech, tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    run(PRETRAIN, "pretrain/pom.yaml", [
        f"--data_folder={synthetic_librispeech}", f"--output_folder={out}", *TINY_MODEL, *TINY_PRETRAIN,
        "--use_tensorboard=True",
    ])  # fmt: skip
    with open(out / "train_steps_log.txt", encoding="utf-8") as f:  # the step log: numbers only
        rows = [dict(item.split(": ", 1) for item in line.strip().split(", ")) for line in f]
    assert all(float(v) == float(v) for row in rows for v in row.values())
    steps = [row for row in rows if "steps" in row]
    found = scalars(out / "tensorboard")
    # every log_interval steps (meta), then every epoch (train and valid)
    assert found["loss"] == pytest.approx([float(row["loss"]) for row in steps], abs=0.01)  # the text log rounds
    assert found["lr"] == pytest.approx([float(row["lr"]) for row in steps], rel=1e-2)
    assert len(found["loss/train"]) == len(found["loss/valid"]) == len(found["masked_acc/valid"]) == 1
    assert found["epochs"] == [1.0]


def test_wandb_is_optional_and_said_in_one_line(synthetic_librispeech, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    args = [f"--data_folder={synthetic_librispeech}", *TINY_MODEL, "--precision=fp32"]
    _, problems = recipe_check(PRETRAIN, "pretrain/pom.yaml", args)
    assert problems == []  # off by default: never needed
    expected = "use_wandb: True needs the wandb package, not installed here (pip install wandb, then wandb login; "
    _, problems = recipe_check(PRETRAIN, "pretrain/pom.yaml", [*args, "--use_wandb=True"])
    assert problems == [expected + "or --use_wandb=False)"]
    _, problems = recipe_check(
        FINETUNE, "finetune/pom.yaml", [*args, "--pretrained_path=none", "--dnn_neurons=32", "--use_wandb=True"]
    )
    assert problems == [expected + "or --use_wandb=False)"]
    proc = run(
        FINETUNE,
        "finetune/pom.yaml",
        [*args, "--pretrained_path=none", f"--output_folder={tmp_path / 'out'}", "--use_wandb=yes"],
        check=False,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "Error: use_wandb must be True or False, got 'yes'"
    assert missing_packages({"use_tensorboard": False, "use_wandb": False}) == []


def test_trackers_get_numbers_only():
    calls = []

    class Recorder:
        def log_stats(self, **stats):
            calls.append(stats)

    Trackers([Recorder()]).log_stats(
        {"split": "dev-clean", "epoch": 2, "lr": torch.tensor(1e-3)}, train_stats={"loss": 1.5, "note": None}
    )
    assert calls == [
        {"stats_meta": {"epoch": 2, "lr": pytest.approx(1e-3)}, "train_stats": {"loss": 1.5}, "valid_stats": None,
         "test_stats": None}
    ]  # fmt: skip
    assert numeric({"ok": True, "n": 3}) == {"n": 3}
    Trackers().log_stats({"epoch": 1})  # none switched on: nothing to do
