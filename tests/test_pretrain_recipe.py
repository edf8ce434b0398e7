"""Tests of the BEST-RQ pre-training recipe (recipes/LibriSpeech/pretrain/train.py).

The recipe runs as users run it (a subprocess, the real YAML files), made tiny
by command-line overrides only, on the shared synthetic LibriSpeech corpus.
"""

import csv
import glob
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import yaml
from finetune_helpers import load_recipe, recipe_check
from speechbrain.lobes.models.BESTRQ import compute_mask

from pom.bestrq import RandomProjectionQuantizer
from pom.recipe.hparams import load_hparams

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
TRAIN = os.path.join(ROOT, "recipes", "LibriSpeech", "pretrain", "train.py")
HPARAMS = os.path.join(ROOT, "hparams", "pretrain")

# Tiny sizes, short batches, one small train split: a few hundred CPU steps in minutes.
TINY = {
    "d_model": 96,
    "num_layers": 2,
    "d_ffn": 192,
    "kernel_size": 7,
    "dropout": 0.0,
    "cb_vocab": 256,
    "cnn_channels": "(16, 8)",
    "cnn_output_size": 160,  # 20 mel bins after the CNN x 8 channels
    "train_splits": "[train-clean-100]",
    "max_batch_len": 10,
    "train_num_buckets": 3,
    "avoid_if_shorter_than": 1.0,
    "num_workers": 0,
    "precision": "fp32",
    "lr": 0.003,
    "warmup_steps": 30,
    "global_batch_seconds": 10,  # = max_batch_len: no accumulation
    "log_interval": 25,
}


def recipe_args(mixer, corpus, out, **changes):
    """Command-line arguments of the recipe with the tiny overrides."""
    options = dict(TINY, data_folder=corpus, output_folder=out, **changes)
    return [TRAIN, os.path.join(HPARAMS, f"{mixer}.yaml"), "--noprogressbar"] + [
        f"--{key}={value}" for key, value in options.items()
    ]


# One thread per process: on a small shared CPU, OpenMP's spinning threads make
# these tiny models 10-60x slower when the cores are busy.
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def run(args, timeout=900, env=ENV, check=True):
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def steps_log(out):
    """Parsed lines of train_steps_log.txt (``key: value, ...``)."""
    rows = []
    with open(os.path.join(out, "train_steps_log.txt"), encoding="utf-8") as f:
        for line in f:
            row = dict(item.split(": ", 1) for item in line.strip().split(", "))
            rows.append({k: float(v) for k, v in row.items()})  # numbers only (also for TensorBoard / W&B)
    return rows


def checkpoints(save_folder):
    """Complete checkpoints, oldest first: meta, optimizer step, epoch, batch."""
    found = []
    for path in glob.glob(os.path.join(save_folder, "CKPT+*")):
        if not os.path.exists(os.path.join(path, "CKPT.yaml")):
            continue
        try:
            with open(os.path.join(path, "CKPT.yaml")) as f:
                meta = yaml.safe_load(f)
            with open(os.path.join(path, "brain.ckpt")) as f:
                brain = yaml.safe_load(f)
            with open(os.path.join(path, "counter.ckpt")) as f:
                epoch = int(f.read())
        except FileNotFoundError:  # deleted by the running recipe while read (it keeps the newest few)
            continue
        found.append(
            dict(path=path, meta=meta, optimizer_step=brain["optimizer_step"], batch=brain["step"], epoch=epoch)
        )
    return sorted(found, key=lambda c: c["meta"]["unixtime"])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- configs
# --------------------------------------------------------------------------- errors
def test_clear_errors(tmp_path, synthetic_librispeech):
    """Missing data folder, a folder that is not LibriSpeech, an unknown mixer: one line, no traceback."""
    cases = [
        ({"data_folder": tmp_path / "missing"}, ["data_folder", "does not exist"]),
        ({"data_folder": tmp_path}, ["data preparation failed", "train-clean-100"]),
        ({"data_folder": synthetic_librispeech, "mixer": "nosuch"}, ["Unknown mixer 'nosuch'", "pom, pom_frequency"]),
    ]
    for options, words in cases:
        args = [TRAIN, os.path.join(HPARAMS, "pom.yaml"), f"--output_folder={tmp_path}/out"]
        args += [f"--{k}={v}" for k, v in options.items()]
        result = run([sys.executable] + args, timeout=300, check=False)
        assert result.returncode != 0
        assert "Traceback" not in result.stderr, result.stderr
        message = result.stderr.strip().splitlines()[-1]
        for word in words:
            assert word in message, message


def test_settings_are_checked_up_front_in_one_line(tmp_path, synthetic_librispeech):
    """A string where a number is expected and negative batches: one line naming each option and
    what it expects, before data preparation (not a numpy traceback from SpeechBrain's sampler)."""
    out = tmp_path / "out"
    args = recipe_args(
        "pom", synthetic_librispeech, out, max_batch_len="abc", global_batch_seconds=-5, valid_batch_size=-2
    )
    result = run([sys.executable] + args, timeout=300, check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: max_batch_len must be a positive number, got 'abc'; global_batch_seconds must be a positive "
        "number or null, got -5; valid_batch_size must be a positive integer, got -2"
    )
    assert not (out / "train.csv").exists()


def test_check_hparams(tmp_path, synthetic_librispeech, capsys):
    """The recipe's one check: silent on the experiment file, one problem per wrong option; the YAML's
    fp16 on a CPU becomes fp32 with a printed warning, an fp16 asked for on the command line is refused."""
    sizes = [f"--{k}={v}" for k, v in TINY.items() if k != "precision"]
    common = [f"--data_folder={synthetic_librispeech}", *sizes]
    _, problems = recipe_check(TRAIN, "pretrain/pom.yaml", [*common, "--precision=fp32"])
    assert problems == [] and "Warning:" not in capsys.readouterr().err
    _, problems = recipe_check(TRAIN, "pretrain/pom.yaml", [
        *[a for a in common if not a.startswith(("--max_batch_len", "--train_num_buckets", "--log_interval"))],
        "--precision=fp32",
        "--max_batch_len=-10", "--train_num_buckets=many", "--mask_prob=1.5", "--mask_length=6", "--log_interval=0",
    ])  # fmt: skip
    assert problems == [
        "max_batch_len must be a positive number, got -10",
        "mask_prob must be a number in (0, 1], got 1.5",
        "train_num_buckets must be a positive integer, got 'many'",
        "log_interval must be a positive integer, got 0",
        "mask_length (6) must be a multiple of stack_frames (4)",
    ]
    if not torch.cuda.is_available():
        hparams, problems = recipe_check(TRAIN, "pretrain/pom.yaml", common)
        assert problems == [] and hparams["precision"] == "fp32"
        warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("Warning:")]
        assert warning == [
            "Warning: precision fp16 (the YAML's) needs a GPU: training in fp32 on this CPU "
            "(give --precision=fp32 or --precision=bf16 to choose)"
        ]
        _, problems = recipe_check(TRAIN, "pretrain/pom.yaml", [*common, "--precision=fp16"])
        assert problems == ["--precision=fp16 needs a GPU (SpeechBrain has no fp16 on CPU): use fp32 or bf16"]


# --------------------------------------------------------------------------- non-finite
def test_nonfinite_loss_skips_the_step(tmp_path):
    """A NaN loss goes through SpeechBrain's fit_batch: counted, weights and optimizer state untouched."""
    import speechbrain as sb

    recipe = load_recipe(TRAIN)
    overrides = "\n".join(f"{k}: {v}" for k, v in TINY.items() if k not in ("train_splits",))
    hp = load_hparams(
        os.path.join(HPARAMS, "pom.yaml"),
        f"data_folder: {tmp_path}\noutput_folder: {tmp_path}/out\n{overrides}\nnonfinite_patience: 1",
    )
    brain = recipe.BestRQBrain(modules=hp["modules"], opt_class=hp["optimizer"], hparams=hp, checkpointer=None)
    brain.init_optimizers()
    brain.nonfinite_count, brain.skipped_steps = 0, 0
    brain.on_stage_start(sb.Stage.TRAIN, 1)
    brain.modules.train()
    torch.manual_seed(0)
    wavs = torch.randn(2, 32000) * 0.1
    mask = compute_mask((2, 201, 80), [201, 161], 0.15, 4)
    batch = (wavs, torch.tensor([1.0, 0.8]), mask, ["a", "b"])

    def weights():
        return {k: v.clone() for k, v in brain.modules.state_dict().items()}

    before = weights()
    finite_objectives = brain.compute_objectives
    brain.compute_objectives = lambda *args: finite_objectives(*args) * float("nan")
    loss = brain.fit_batch(batch)
    assert not torch.isfinite(loss)
    assert brain.nonfinite_count == 1 and brain.skipped_steps == 1
    assert all(torch.equal(before[k], v) for k, v in weights().items())
    assert not brain.optimizer.state  # AdamW never saw the step (no moments, no weight decay)

    brain.compute_objectives = finite_objectives
    assert torch.isfinite(brain.fit_batch(batch))
    assert not all(torch.equal(before[k], v) for k, v in weights().items())

    brain.compute_objectives = lambda *args: finite_objectives(*args) * float("nan")
    with pytest.raises(ValueError, match="patience is exhausted"):
        brain.fit_batch(batch)  # a second one in the epoch exceeds nonfinite_patience=1


# --------------------------------------------------------------------------- learning
@pytest.mark.parametrize("mixer,norm_type", [("pom", "global"), ("relposmhaxl", "sentence")])
def test_pretraining_learns(mixer, norm_type, synthetic_librispeech, tmp_path):
    """Masked-prediction loss falls well below its start, masked accuracy rises well above chance
    (with either normalisation)."""
    out = tmp_path / mixer
    run(
        [sys.executable] + recipe_args(mixer, synthetic_librispeech, out, optimizer_step_limit=300, norm_type=norm_type)
    )
    rows = [r for r in steps_log(out) if "steps" in r]
    first, last = rows[0], rows[-1]
    print(f"{mixer}: loss {first['loss']} -> {last['loss']}, masked acc {first['masked_acc']} -> {last['masked_acc']}")
    assert last["steps"] == 300
    chance = 1 / TINY["cb_vocab"]
    assert last["loss"] < first["loss"] - 0.5 and last["loss"] < math.log(TINY["cb_vocab"]) - 1.0
    assert last["masked_acc"] > 30 * chance and last["masked_acc"] > 2 * first["masked_acc"]
    # Artefacts for fine-tuning
    config = json.loads((out / "save" / "encoder_config.json").read_text())
    assert config["mixer"] == mixer and config["d_model"] == TINY["d_model"] and config["norm_type"] == norm_type
    for name in ("model.ckpt", "normalize.ckpt", "encoder_config.json"):
        assert (out / "pretrained" / name).exists()


# --------------------------------------------------------------------------- kill and resume
def _batch_log(path, start=0):
    with open(path, "rb") as f:
        f.seek(start)
        text = f.read().decode()
    lines = text.split("\n")[:-1]  # a line cut by the kill has no newline
    rows = []
    for line in lines:
        epoch, step, opt_step, ids = line.split("\t")
        rows.append((int(epoch), int(step), int(opt_step), tuple(ids.split())))
    return rows


def test_kill_and_resume(synthetic_librispeech, tmp_path):
    """kill -9 a real run after a checkpoint; the same command resumes there and ends at the step limit,
    each epoch seeing every utterance once, and only the batches after the checkpoint done twice."""
    out, log = tmp_path / "run", tmp_path / "batches.tsv"
    limit = 60
    args = [sys.executable] + recipe_args(
        "pom",
        synthetic_librispeech,
        out,
        d_model=32,
        num_layers=1,
        d_ffn=64,
        optimizer_step_limit=limit,
        global_batch_seconds=20,
        ckpt_interval_steps=5,  # 2 accumulated batches
        log_interval=5,
        batch_log=log,
    )
    with open(tmp_path / "first.log", "w") as first_log:
        proc = subprocess.Popen(
            args, cwd=ROOT, env=ENV, stdout=first_log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.time() + 600
        while True:
            done = [
                c
                for c in checkpoints(out / "save")
                if c["optimizer_step"] >= 8 and c["meta"].get("brain_intra_epoch_ckpt")
            ]
            if done:
                break
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.time() < deadline, "no intra-epoch checkpoint in time"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    last = checkpoints(out / "save")[-1]
    assert 0 < last["optimizer_step"] < limit
    assert last["batch"] % 2 == 0  # intra-epoch checkpoints only after an optimizer step
    killed_at = os.path.getsize(log)
    before = _batch_log(log)

    run(args)  # the same command
    rows = steps_log(out)
    starts = [(r["start_step"], r["start_epoch"], r["start_batch"]) for r in rows if "start_step" in r]
    if last["meta"].get("end-of-epoch"):
        position = (last["epoch"] + 1, 1)  # (epoch, batch) of the first batch to train
    else:
        position = (last["epoch"], last["batch"] + 1)
    step = last["optimizer_step"]
    assert starts == [(0, 1, 0), (step, position[0], position[1] - 1)]  # from scratch, then resumed there
    assert checkpoints(out / "save")[-1]["optimizer_step"] == limit

    after = _batch_log(log, killed_at)
    assert after[0][:2] == position  # no batch skipped, none before the checkpoint redone
    redone = [r for r in before if r[:2] >= position]
    assert after[: len(redone)] == redone  # the interrupted interval, same batches
    combined = [r for r in before if r[:2] < position] + after
    assert combined[-1][2] == limit and len(combined) == limit * 2
    with open(out / "train.csv") as f:
        train_ids = sorted(r["ID"] for r in csv.DictReader(f) if float(r["duration"]) >= TINY["avoid_if_shorter_than"])
    epochs = sorted({r[0] for r in combined})
    assert len(epochs) >= 2
    for epoch in epochs:
        steps = [r[1] for r in combined if r[0] == epoch]
        assert steps == list(range(1, len(steps) + 1))
        if epoch != epochs[-1]:  # complete epochs: every utterance exactly once
            assert sorted(i for r in combined if r[0] == epoch for i in r[3]) == train_ids

    # Resuming into another architecture: a one-line refusal, not a shape-mismatch traceback.
    other = [arg if not arg.startswith("--d_model=") else "--d_model=48" for arg in args]
    result = run(other, check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "d_model: 32 (saved) != 48 (here)" in result.stderr.strip().splitlines()[-1]


# --------------------------------------------------------------------------- DDP
def test_ddp_two_processes(synthetic_librispeech, tmp_path):
    """torchrun --nproc-per-node=2 (gloo): trains; weights, codebook and global normalisation
    statistics identical on both ranks; the global batch is split over the two ranks."""
    out = tmp_path / "ddp"
    limit = 12
    args = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node=2",
        "--nnodes=1",
        f"--master_port={free_port()}",
    ] + recipe_args(
        "pom",
        synthetic_librispeech,
        out,
        d_model=32,
        num_layers=1,
        d_ffn=64,
        optimizer_step_limit=limit,
        distributed_backend="gloo",
        log_interval=4,
        global_batch_seconds=20,
    )
    run(args)
    plan = json.loads((out / "global_batch.json").read_text())
    assert (plan["world_size"], plan["per_device"], plan["grad_accumulation_factor"], plan["global_batch"]) == (
        2,
        10,
        1,
        20,
    )
    records = [json.loads(line) for line in (out / "ddp_check.jsonl").read_text().splitlines()]
    assert records[0]["where"] == "start" and records[-1]["steps"] == limit
    for record in records:
        assert len(record["ranks"]) == 2 and record["ranks"][0] == record["ranks"][1], record
    assert records[0]["ranks"][0]["model"] != records[-1]["ranks"][0]["model"]  # it trained
    assert len({r["ranks"][0]["quantizer"] for r in records}) == 1  # frozen
    # global normalisation: statistics reduced over both ranks (equal fingerprints above), then saved
    assert records[0]["ranks"][0]["normalize"] != records[-1]["ranks"][0]["normalize"]
    stats = torch.load(out / "pretrained" / "normalize.ckpt")
    assert stats["count"] > 0 and stats["glob_mean"].shape == (80,) and torch.all(stats["glob_std"] > 0)
    saved = torch.load(os.path.join(checkpoints(out / "save")[-1]["path"], "quantizer.ckpt"))
    seeded = RandomProjectionQuantizer(4 * 80, 16, TINY["cb_vocab"], seed=1000)
    assert torch.equal(saved["CB"], seeded.CB) and torch.equal(saved["P"], seeded.P)
    # Each rank took half of the batches of an epoch (DistributedSamplerWrapper over the dynamic batches).
    batches = int(re.search(r"in (\d+) dynamic batches", (out / "log.txt").read_text()).group(1))
    first_epoch = (out / "train_stage_log.txt").read_text().splitlines()[0]
    assert first_epoch.startswith(f"epoch: 1, steps: {math.ceil(batches / 2)},"), (batches, first_epoch)


# --------------------------------------------------------------------------- streaming options
@pytest.mark.parametrize("changes", [{"streaming": True}, {"causal": True}], ids=["dynamic_chunks", "causal"])
def test_streaming_options_train(changes, synthetic_librispeech, tmp_path):
    """Dynamic chunk training and causal encoders run through the same recipe, and are recorded."""
    out = tmp_path / "run"
    run([sys.executable] + recipe_args("pom", synthetic_librispeech, out, optimizer_step_limit=50, **changes))
    rows = [r for r in steps_log(out) if "steps" in r]
    assert rows[-1]["steps"] == 50 and math.isfinite(rows[-1]["loss"])
    config = json.loads((out / "save" / "encoder_config.json").read_text())
    assert config["causal"] is changes.get("causal", False)
