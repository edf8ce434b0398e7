"""Tiny pre-training and fine-tuning runs shared by the fine-tuning,
transcription and demo tests (each run is made once per test session)."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAIN = os.path.join(ROOT, "recipes", "LibriSpeech", "pretrain", "train.py")
FINETUNE = os.path.join(ROOT, "recipes", "LibriSpeech", "finetune", "train.py")

#: Encoder sizes of the tiny runs (both stages).
TINY_MODEL = [
    "--d_model=48",
    "--num_layers=2",
    "--d_ffn=96",
    "--kernel_size=7",
    "--cnn_channels=(8,8)",
    "--cnn_output_size=160",
]
TINY_PRETRAIN = [
    "--precision=fp32",
    "--num_workers=0",
    "--max_batch_len=40",
    "--train_num_buckets=4",
    "--number_of_epochs=1",
    "--warmup_steps=5",
    "--avoid_if_shorter_than=0.5",
    "--cb_vocab=64",
    "--global_batch_seconds=40",
    "--ckpt_interval_minutes=0",
    "--log_interval=5",
]
TINY_FINETUNE = [
    "--precision=fp32",
    "--num_workers=0",
    "--dnn_neurons=32",
    "--batch_size=8",
    "--global_batch_size=8",
    "--sorting=random",
    "--lr=0.003",
    "--lr_encoder=0.001",
    "--ckpt_interval_minutes=0",
]


def run(script, hparams, args, check=True):
    """Runs a recipe in a subprocess; returns the CompletedProcess (text output).
    A ``--key=value`` given twice keeps the last value."""
    last = {}
    for arg in args:
        last[arg.split("=", 1)[0]] = arg
    command = [sys.executable, script, os.path.join(ROOT, "hparams", hparams), *last.values()]
    # One thread: on a shared 2-core machine more threads oversubscribe the cores (several times slower).
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def once(folder, make):
    """Calls ``make(folder)`` unless a previous call finished it (``.done``)."""
    done = os.path.join(folder, ".done")
    if not os.path.exists(done):
        make(folder)
        open(done, "w").close()
    return folder


def tiny_pretrained(tmp_path_factory, corpus):
    """A tiny BEST-RQ pre-training run (the real recipe) on the fixture corpus."""
    folder = str(tmp_path_factory.getbasetemp() / "shared_tiny_pretrain")
    return once(
        folder,
        lambda out: run(
            PRETRAIN,
            "pretrain/pom.yaml",
            [f"--data_folder={corpus}", f"--output_folder={out}", *TINY_MODEL, *TINY_PRETRAIN],
        ),
    )


def tiny_finetuned(tmp_path_factory, corpus):
    """A tiny CTC fine-tuning run from :func:`tiny_pretrained`: 3 epochs,
    greedy test decoding with batches of 1 (as ``pom.transcribe`` decodes)."""
    pretrained = tiny_pretrained(tmp_path_factory, corpus)
    folder = str(tmp_path_factory.getbasetemp() / "shared_tiny_finetune")
    args = [
        f"--data_folder={corpus}",
        f"--output_folder={folder}",
        f"--pretrained_path={pretrained}",
        "--number_of_epochs=3",
        "--test_decoding=greedy",
        "--test_batch_size=1",
        *TINY_MODEL,
        *TINY_FINETUNE,
    ]
    return once(folder, lambda out: run(FINETUNE, "finetune/pom.yaml", args))


def train_log(folder):
    """``[(epoch, train loss, valid loss, valid CER), ...]`` from a fine-tuning train_log.txt."""
    number = r"([-+0-9.e]+)"
    rows = []
    with open(os.path.join(folder, "train_log.txt"), encoding="utf-8") as f:
        for line in f:
            if line.startswith("epoch:"):
                rows.append(tuple(
                    float(re.search(key + number, line).group(1))
                    for key in ("epoch: ", "train loss: ", "valid loss: ", "valid CER: ")
                ))  # fmt: skip
    return rows


def load_recipe(script):
    """The recipe ``script`` as a module: its classes and functions, ``main`` not run."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"recipe_{os.path.basename(os.path.dirname(script))}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def recipe_check(script, hparams, args):
    """``(hparams, problems)``: the recipe's ``check_hparams`` on the command line
    ``args`` (hparams loaded as the recipe loads them, in this process)."""
    import speechbrain as sb

    from pom.recipe.hparams import load_hparams

    hparams_file, run_opts, overrides = sb.parse_arguments([os.path.join(ROOT, "hparams", hparams), *args])
    loaded = load_hparams(hparams_file, overrides)
    return loaded, load_recipe(script).check_hparams(loaded, run_opts)
