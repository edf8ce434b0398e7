"""The plan of ``make gpu-check``'s stages: their time budgets, the sizes and
overrides of its short training runs, the command lines of every stage, and
running a command under a deadline (``benchmarks/gpu_check.py`` runs them and
judges the results).

Every command is ``python -m <module>`` or a recipe script, run from the
repository root (the preflight of ``make gpu-check`` puts the root and the
installed bundle on ``PYTHONPATH``).

Example
-------
>>> [stage.name for stage in STAGES][:3]
['check', 'train', 'pretrain_cost']
>>> overrides({"lr": 0.1}, {"lr": 0.2, "seed": 3})
['--lr=0.2', '--seed=3']
"""

import collections
import os
import shlex
import signal
import subprocess
import sys
import time

from benchmarks.gpu_reports import (
    FUSED_FALLBACK_WARNING,
    checkpoint_steps,
    count_lines,
    count_nonfinite_warnings,
    read_implementation,
    read_steps_log,
    read_train_log,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAIN_SCRIPT = os.path.join(REPO, "recipes", "LibriSpeech", "pretrain", "train.py")
FINETUNE_SCRIPT = os.path.join(REPO, "recipes", "LibriSpeech", "finetune", "train.py")

#: the PoM model the efficiency targets judge (benchmarks/common.py names); --pom changes it
DEFAULT_POM = "pom_fused"

Stage = collections.namedtuple("Stage", "name budget_s quick_budget_s expected_s quick_expected_s what")
#: the stages in order: budgets (full, --quick: the stage is killed there) and the expected times
#: (estimates from H100 timings of these encoders, before any run of this check on a GPU), in seconds
STAGES = [
    Stage("check", 45, 25, 30, 20, "chunked and fused PoM vs plain PoM on CUDA, fp32 and bf16 (check.py)"),
    Stage("train", 125, 75, 90, 60, "BEST-RQ pre-training (bf16) and CTC fine-tuning (fp16), fused PoM, resumed"),
    Stage("pretrain_cost", 60, 20, 40, 15, "pretrain_cost.py: the paper's configurations, full size and batch, fp16"),
    Stage("figure2_infer", 40, 19, 30, 15, "efficiency.py: inference, bf16, batch 6, 10-80 s"),
    Stage("figure2_train", 55, 20, 45, 16, "efficiency.py: training step, bf16, batch 6, 10-80 s"),
    Stage("paper", 40, 15, 30, 12, "efficiency.py: the paper's protocol, forward with autograd on, fp16, batch 6"),
    Stage("long", 30, 15, 20, 12, "efficiency.py: one long utterance, batch 1, 300-1200 s"),
    Stage("floor", 25, 11, 15, 9, "floor.py: one PoM layer against its bf16 floor, batch 6, 80 s"),
]
STAGE_NAMES = [s.name for s in STAGES]

#: encoder sizes of the training stage (both recipes: a checkpoint loads only into the same sizes)
TRAIN_MODEL = {
    "d_model": 192,
    "num_layers": 4,
    "d_ffn": 768,
    "kernel_size": 15,
    "cnn_channels": "(32,32)",
    "cnn_output_size": 640,  # 80 mel bins / 4 after the CNN x 32 channels
}
#: the PoM of both recipes through the fused Triton kernels (no dropout inside the mixer: the
#: fused op refuses it; the Conformer's other dropouts stay)
FUSED_POM = {"mixer_options": "{degree: 2, expansion: 2, implementation: fused}"}
#: BEST-RQ pre-training at that size (the step limits are in settings())
PRETRAIN_OVERRIDES = {
    "precision": "bf16",
    "num_workers": 2,
    "max_batch_len": 30,
    "global_batch_seconds": 30,  # = max_batch_len: no gradient accumulation
    "train_num_buckets": 10,
    "avoid_if_shorter_than": 0.5,
    "cb_vocab": 256,
    "lr": 0.003,
    "warmup_steps": 30,
    "number_of_epochs": 1000,  # the step limit stops it
    "ckpt_interval_minutes": 0,
    "log_interval": 10,
}
#: CTC fine-tuning (SpeechBrain's augmentation on, as in the recipe) on every synthetic train split
FINETUNE_OVERRIDES = {
    "precision": "fp16",
    "num_workers": 2,
    "train_splits": "[train-clean-100, train-clean-360, train-other-500]",
    "test_splits": "[test-clean]",
    "test_decoding": "greedy",
    "dnn_neurons": 256,
    "batch_size": 8,
    "global_batch_size": 8,
    "sorting": "random",
    "lr": 0.003,
    "lr_encoder": 0.001,
    "ckpt_interval_minutes": 0,
}
CORPUS_HOURS = 0.3
CORPUS_SEED = 0


def settings(quick=False, pom=DEFAULT_POM):
    """Lengths, steps and repeats of a full or ``--quick`` run (``--quick`` drops
    the models no target judges: the plain PoM when ``pom`` is another one)."""
    judged = [pom, "summarymixing", "relposmhaxl"]
    return {
        "pom": pom,
        "pretrain_steps": [100, 150] if quick else [200, 300],
        "finetune_epochs": [1, 2] if quick else [1, 3],
        "figure_seconds": [20, 40, 80] if quick else [10, 20, 40, 60, 80],
        "figure_mixers": unique(judged if quick else judged + ["pom", "pom_fused"]),
        "long_seconds": [600, 1200] if quick else [300, 600, 1200],
        "long_mixers": unique(
            [pom, "summarymixing", "mha"] if quick else [pom, "summarymixing", "pom", "pom_fused", "mha"]
        ),
        "repeats": 5 if quick else 10,
        "warmup": 3 if quick else 5,
        "cost_experiments": ["pom"] if quick else ["pom", "relposmhaxl", "summarymixing"],
        "cost_steps": 5 if quick else 12,
        "cost_warmup": 1 if quick else 2,
    }


def unique(names):
    return list(dict.fromkeys(names))


def overrides(*dicts):
    """``--key=value`` arguments (later dicts win)."""
    merged = {}
    for d in dicts:
        merged.update(d)
    return [f"--{key}={value}" for key, value in merged.items()]


# --------------------------------------------------------------------------- #
# The commands
# --------------------------------------------------------------------------- #
def training_commands(out, quick=False, python=sys.executable, device="cuda", model=None, changes=None, corpus=None):
    """``[(name, argv), ...]`` of the training stage, in order: the corpus,
    pre-training to the first and the second step limit (same output folder:
    the second run resumes), fine-tuning for the first and the second number of
    epochs (same output folder). ``corpus``: the folder holding a corpus made in
    advance (a bundle's; the corpus command then only checks its options),
    default ``<out>/work/corpus``. ``model`` and ``changes`` (``{"pretrain":
    {...}, "finetune": {...}}``) replace sizes and options (tiny CPU smoke runs)."""
    plan = settings(quick)
    work = os.path.join(out, "work")
    pretrain, finetune = (os.path.join(work, name) for name in ("pretrain", "finetune"))
    corpus = corpus or os.path.join(work, "corpus")
    data = os.path.join(corpus, "LibriSpeech")
    model = TRAIN_MODEL if model is None else model
    changes = changes or {}
    common = [f"--device={device}", "--noprogressbar", f"--data_folder={data}"]
    corpus_args = ["--out", corpus, "--hours", str(CORPUS_HOURS), "--seed", str(CORPUS_SEED), "--no-progress"]
    commands = [("corpus", [python, "-m", "pom.data.synthetic", *corpus_args])]
    for i, limit in enumerate(plan["pretrain_steps"], 1):
        options = overrides(
            model, FUSED_POM, PRETRAIN_OVERRIDES, changes.get("pretrain", {}), {"optimizer_step_limit": limit}
        )
        hparams = os.path.join(REPO, "hparams", "pretrain", "pom.yaml")
        commands.append(
            (f"pretrain_{i}", [python, PRETRAIN_SCRIPT, hparams, *common, f"--output_folder={pretrain}", *options])
        )
    for i, epochs in enumerate(plan["finetune_epochs"], 1):
        options = overrides(
            model, FUSED_POM, FINETUNE_OVERRIDES, changes.get("finetune", {}), {"number_of_epochs": epochs}
        )
        hparams = os.path.join(REPO, "hparams", "finetune", "pom.yaml")
        folders = [f"--output_folder={finetune}", f"--pretrained_path={pretrain}"]
        commands.append((f"finetune_{i}", [python, FINETUNE_SCRIPT, hparams, *common, *folders, *options]))
    return commands


def efficiency_command(out, stage, quick=False, pom=DEFAULT_POM, python=sys.executable):
    """The ``efficiency.py``, ``floor.py`` or ``pretrain_cost.py`` command of a measuring stage."""
    plan = settings(quick, pom)
    module = "benchmarks.efficiency"
    timing = ["--repeats", str(plan["repeats"]), "--warmup", str(plan["warmup"])]
    seconds = [str(s) for s in plan["figure_seconds"]]
    if stage in ("figure2_infer", "figure2_train"):
        mode = stage.split("_")[1]
        args = ["--mode", mode, "--dtype", "bf16", "--batch", "6", "--seconds", *seconds]
        args += ["--mixers", *plan["figure_mixers"]]
    elif stage == "paper":
        args = ["--mode", "infer", "--grad", "--dtype", "fp16", "--batch", "6", "--seconds", *seconds]
        args += ["--mixers", *plan["figure_mixers"]]
    elif stage == "long":
        args = ["--mode", "infer", "--dtype", "bf16", "--batch", "1", "--seconds", *map(str, plan["long_seconds"])]
        args += ["--mixers", *plan["long_mixers"]]
        timing = ["--repeats", "3", "--warmup", "2"]
    elif stage == "floor":
        module = "benchmarks.floor"
        args, timing = ["--dtype", "bf16", "--batch", "6", "--seconds", "80"], ["--repeats", str(plan["repeats"])]
    elif stage == "pretrain_cost":
        module = "benchmarks.pretrain_cost"
        args = ["--experiments", *plan["cost_experiments"]]
        timing = ["--steps", str(plan["cost_steps"]), "--warmup", str(plan["cost_warmup"])]
    else:
        raise ValueError(f"not a measuring stage: {stage}")
    return [python, "-m", module, "--device", "cuda", *args, *timing, "--out", stage_folder(out, stage)]


def stage_folder(out, stage):
    """Where a stage writes its files."""
    return os.path.join(out, *stage.split("_", 1)) if stage.startswith("figure2_") else os.path.join(out, stage)


def stage_commands(out, quick=False, pom=DEFAULT_POM, python=sys.executable, corpus=None):
    """``{stage: [(name, argv), ...]}``: every command the check runs."""
    commands = {
        "check": [
            ("check", [python, "-m", "benchmarks.gpu_check", "--worker", "check", "--out", stage_folder(out, "check")])
        ],
        "train": training_commands(out, quick, python, corpus=corpus),
    }
    for stage in STAGE_NAMES[2:]:
        commands[stage] = [(stage, efficiency_command(out, stage, quick, pom, python))]
    return commands


# --------------------------------------------------------------------------- #
# Running commands under a deadline
# --------------------------------------------------------------------------- #
def run_command(name, argv, log_path, deadline, clock=time.monotonic):
    """Runs ``argv`` (its own process group, output appended to ``log_path``)
    until ``deadline``; returns ``None`` or the problem in one line."""
    left = deadline - clock()
    if left < 1:
        return f"{name}: not started, no time left in the stage's budget"
    print(f"[gpu-check]   {name} (at most {left:.0f} s more)", flush=True)
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n$ {shlex.join(argv)}\n")
        log.flush()
        start = clock()
        proc = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=left)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the command and its workers (its own process group)
            proc.wait()
            log.write(f"[gpu-check] killed after {clock() - start:.0f} s: over the stage's budget\n")
            return f"{name}: over the stage's budget, killed after {clock() - start:.0f} s"
        except BaseException:  # Ctrl-C: its own session does not get the signal, so stop it too
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    if code != 0:
        return f"{name}: exit status {code}: {last_line(log_path)}"
    return None


def last_line(path, skip=("$ ",)):
    """The last non-empty line of a log (its error, usually)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f if line.strip() and not line.startswith(skip)]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def read_training(out, quick=False, log=None):
    """What the training stage's recipes wrote (and its ``log``: the commands'
    output), as the judges take it."""
    plan = settings(quick)
    work = os.path.join(out, "work")
    pretrain, finetune = os.path.join(work, "pretrain"), os.path.join(work, "finetune")
    return {
        "pretrain": {
            "limits": plan["pretrain_steps"],
            "log": read_steps_log(os.path.join(pretrain, "train_steps_log.txt")),
            "checkpoint_steps": checkpoint_steps(os.path.join(pretrain, "save")),
            "nonfinite_warnings": count_nonfinite_warnings(os.path.join(pretrain, "log.txt")),
        },
        "finetune": {
            "epochs_planned": plan["finetune_epochs"],
            "epochs": read_train_log(os.path.join(finetune, "train_log.txt")),
            "nonfinite_warnings": count_nonfinite_warnings(os.path.join(finetune, "log.txt")),
        },
        "fused": {
            "pretrain": read_implementation(os.path.join(pretrain, "hyperparams.yaml")),
            "finetune": read_implementation(os.path.join(finetune, "hyperparams.yaml")),
            "fallback_warnings": count_lines(log, FUSED_FALLBACK_WARNING) if log else 0,
        },
    }
