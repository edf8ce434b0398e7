#!/usr/bin/env python
"""One command that proves the GPU path (``make gpu-check``), in under 10 minutes on one H100.

Stages, each a subprocess with a time budget (``STAGES``; a stage over its
budget is killed and recorded as FAIL, with what it had measured; the next
stages still run):

1. ``check``: chunked and fused PoM against plain PoM on CUDA, fp32 and bf16,
   outputs and gradients (``benchmarks/check.py``'s functions, in a fresh
   process: the fused kernels' first compiled run);
2. ``train``: a synthetic corpus (``pom.data.synthetic``, 0.3 h), BEST-RQ
   pre-training in bf16 through the real recipe (``hparams/pretrain/pom.yaml``,
   small sizes on the command line) run twice, to a step limit and then to a
   higher one (it must resume from the saved step), then CTC fine-tuning in fp16
   (``hparams/finetune/pom.yaml``) run for one epoch and then resumed for more;
3. ``figure2_infer``, ``figure2_train``: ``benchmarks/efficiency.py``, batch 6,
   10-80 s, bf16, inference and one training step; ``paper``: the paper's
   protocol (forward with autograd on, fp16); ``long``: one utterance of
   300-1200 s at batch 1; ``floor``: ``benchmarks/floor.py``, one PoM layer
   against its bf16 floor.

The targets (``benchmarks/targets.py``) are judged from the measured rows and
written to ``summary.md`` and ``summary.json`` with PASS / FAIL and the numbers.
Everything goes under ``benchmarks/runs/<gpu name>/`` (``--out``); the corpus
and the recipes' checkpoints under its ``work/`` folder, which git ignores.
Exit status: 0 if every target passed and every stage finished, 1 otherwise,
2 without a GPU (one line, nothing run).

Examples
--------
python benchmarks/gpu_check.py                  # or: make gpu-check
python benchmarks/gpu_check.py --quick          # fewer lengths, steps and repeats (about 6 minutes at most)
python benchmarks/gpu_check.py --stages long floor --out /tmp/gpu-check
"""

import argparse
import collections
import datetime
import glob
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

if __name__ == "__main__" and not __package__:  # `python benchmarks/gpu_check.py`: the repo root holds the package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import targets as T  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = os.path.join(REPO, "benchmarks", "runs")
PRETRAIN_SCRIPT = os.path.join(REPO, "recipes", "LibriSpeech", "pretrain", "train.py")
FINETUNE_SCRIPT = os.path.join(REPO, "recipes", "LibriSpeech", "finetune", "train.py")

#: the whole check stops starting new work after this many seconds (stage budgets add up to less)
TOTAL_BUDGET_S = 570
#: the PoM model the efficiency targets judge (benchmarks/common.py names); --pom changes it
DEFAULT_POM = "pom_fused"

Stage = collections.namedtuple("Stage", "name budget_s quick_budget_s what")
#: stage name -> budgets in seconds (full, --quick) and what it runs; in this order
STAGES = [
    Stage("check", 60, 60, "chunked and fused PoM vs plain PoM on CUDA, fp32 and bf16 (check.py)"),
    Stage("train", 210, 120, "synthetic corpus, BEST-RQ pre-training (bf16) and CTC fine-tuning (fp16), resumed"),
    Stage("figure2_infer", 55, 35, "efficiency.py: inference, bf16, batch 6, 10-80 s"),
    Stage("figure2_train", 80, 45, "efficiency.py: training step, bf16, batch 6, 10-80 s"),
    Stage("paper", 50, 30, "efficiency.py: the paper's protocol, forward with autograd on, fp16, batch 6"),
    Stage("long", 45, 30, "efficiency.py: one long utterance, batch 1, 300-1200 s"),
    Stage("floor", 40, 30, "floor.py: one PoM layer against its bf16 floor, batch 6, 80 s"),
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
#: warnings of SpeechBrain and of the recipes about non-finite values
NONFINITE_WARNINGS = ("Loss is not finite", "Patience not yet exhausted", "contain NaN or Inf", "Non-finite")


def settings(quick=False, pom=DEFAULT_POM):
    """Lengths, steps and repeats of a full or ``--quick`` run."""
    return {
        "pom": pom,
        "pretrain_steps": [100, 150] if quick else [200, 300],
        "finetune_epochs": [1, 2] if quick else [1, 3],
        "figure_seconds": [20, 40, 80] if quick else [10, 20, 40, 60, 80],
        "figure_mixers": unique([pom, "summarymixing", "relposmhaxl", "pom", "pom_fused"]),
        "long_seconds": [600, 1200] if quick else [300, 600, 1200],
        "long_mixers": unique([pom, "summarymixing", "pom", "pom_fused", "mha"]),
        "repeats": 5 if quick else 10,
        "warmup": 3 if quick else 5,
    }


def unique(names):
    return list(dict.fromkeys(names))


def safe_name(gpu_name):
    """A folder name from a device name: ``NVIDIA H100 80GB HBM3`` -> ``nvidia-h100-80gb-hbm3``."""
    return re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-") or "gpu"


def default_out(gpu_name):
    return os.path.join(RUNS, safe_name(gpu_name))


def overrides(*dicts):
    """``--key=value`` arguments (later dicts win)."""
    merged = {}
    for d in dicts:
        merged.update(d)
    return [f"--{key}={value}" for key, value in merged.items()]


# --------------------------------------------------------------------------- #
# The commands
# --------------------------------------------------------------------------- #
def training_commands(out, quick=False, python=sys.executable, device="cuda", model=None, changes=None):
    """``[(name, argv), ...]`` of the training stage, in order: the corpus,
    pre-training to the first and the second step limit (same output folder:
    the second run resumes), fine-tuning for the first and the second number of
    epochs (same output folder). ``model`` and ``changes`` (``{"pretrain":
    {...}, "finetune": {...}}``) replace sizes and options (tiny CPU smoke runs)."""
    plan = settings(quick)
    work = os.path.join(out, "work")
    corpus, pretrain, finetune = (os.path.join(work, name) for name in ("corpus", "pretrain", "finetune"))
    data = os.path.join(corpus, "LibriSpeech")
    model = TRAIN_MODEL if model is None else model
    changes = changes or {}
    common = [f"--device={device}", "--noprogressbar", f"--data_folder={data}"]
    corpus_args = ["--out", corpus, "--hours", str(CORPUS_HOURS), "--seed", "0", "--no-progress"]
    commands = [("corpus", [python, "-m", "pom.data.synthetic", *corpus_args])]
    for i, limit in enumerate(plan["pretrain_steps"], 1):
        options = overrides(model, PRETRAIN_OVERRIDES, changes.get("pretrain", {}), {"optimizer_step_limit": limit})
        hparams = os.path.join(REPO, "hparams", "pretrain", "pom.yaml")
        commands.append(
            (f"pretrain_{i}", [python, PRETRAIN_SCRIPT, hparams, *common, f"--output_folder={pretrain}", *options])
        )
    for i, epochs in enumerate(plan["finetune_epochs"], 1):
        options = overrides(model, FINETUNE_OVERRIDES, changes.get("finetune", {}), {"number_of_epochs": epochs})
        hparams = os.path.join(REPO, "hparams", "finetune", "pom.yaml")
        folders = [f"--output_folder={finetune}", f"--pretrained_path={pretrain}"]
        commands.append((f"finetune_{i}", [python, FINETUNE_SCRIPT, hparams, *common, *folders, *options]))
    return commands


def efficiency_command(out, stage, quick=False, pom=DEFAULT_POM, python=sys.executable):
    """The ``efficiency.py`` or ``floor.py`` command of an efficiency stage."""
    plan = settings(quick, pom)
    script = os.path.join(REPO, "benchmarks", "efficiency.py")
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
        script = os.path.join(REPO, "benchmarks", "floor.py")
        args, timing = ["--dtype", "bf16", "--batch", "6", "--seconds", "80"], ["--repeats", str(plan["repeats"])]
    else:
        raise ValueError(f"not an efficiency stage: {stage}")
    return [python, script, "--device", "cuda", *args, *timing, "--out", stage_folder(out, stage)]


def stage_folder(out, stage):
    """Where a stage writes its files."""
    return os.path.join(out, *stage.split("_", 1)) if stage.startswith("figure2_") else os.path.join(out, stage)


def stage_commands(out, quick=False, pom=DEFAULT_POM, python=sys.executable):
    """``{stage: [(name, argv), ...]}``: every command the check runs."""
    commands = {
        "check": [
            ("check", [python, os.path.abspath(__file__), "--worker", "check", "--out", stage_folder(out, "check")])
        ],
        "train": training_commands(out, quick, python),
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


# --------------------------------------------------------------------------- #
# Reading what the stages wrote
# --------------------------------------------------------------------------- #
RESUMED = re.compile(r"resumed from checkpoint: optimizer step (\d+)[;,] epoch (\d+) after (\d+) batches")


def read_steps_log(path):
    """Rows of the pre-training's ``train_steps_log.txt`` (numbers as floats):
    ``{"start_step", "start_epoch", "start_batch"}`` where a run starts (0: from
    scratch), ``{"steps", "loss", "skipped_steps", ...}`` every ``log_interval``
    steps. Also reads the older ``event: started from scratch`` / ``event:
    resumed from checkpoint: optimizer step N; epoch E after B batches`` lines."""
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if line.startswith("event: "):
                resumed = RESUMED.search(line)
                if resumed:
                    rows.append(dict(zip(("start_step", "start_epoch", "start_batch"), map(float, resumed.groups()))))
                elif "started from scratch" in line:
                    rows.append({"start_step": 0.0, "start_epoch": 1.0, "start_batch": 0.0})
                continue
            row = {}
            for item in line.split(", "):
                key, sep, value = item.partition(": ")
                if sep:
                    row[key] = T.number(value)
            if "steps" in row or "start_step" in row:
                rows.append(row)
    return rows


def checkpoint_steps(save_folder):
    """Optimizer steps of the complete checkpoints of a recipe, oldest first."""
    import yaml

    found = []
    for path in glob.glob(os.path.join(save_folder, "CKPT+*")):
        try:
            with open(os.path.join(path, "CKPT.yaml"), encoding="utf-8") as f:
                meta = yaml.safe_load(f) or {}
            with open(os.path.join(path, "brain.ckpt"), encoding="utf-8") as f:
                brain = yaml.safe_load(f) or {}
        except OSError:
            continue  # not complete
        found.append((meta.get("unixtime", 0), int(brain.get("optimizer_step", -1))))
    return [step for _, step in sorted(found)]


def read_train_log(path):
    """Epochs of the fine-tuning's ``train_log.txt``: ``[{"epoch", "train_loss",
    "valid_loss", "valid_CER", "valid_WER"}, ...]`` (floats; nan when missing)."""
    epochs = []
    if not os.path.exists(path):
        return epochs
    keys = {"epoch": "epoch", "train loss": "train_loss", "valid loss": "valid_loss"}
    keys.update({"valid CER": "valid_CER", "valid WER": "valid_WER"})
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.startswith("epoch:"):
                continue
            row = {}
            for key, name in keys.items():
                match = re.search(rf"(?:^|[ ,]){key}: ([^,\s]+)", line)
                row[name] = T.number(match.group(1)) if match else math.nan
            epochs.append(row)
    return epochs


def count_nonfinite_warnings(*paths):
    count = 0
    for path in paths:
        if os.path.exists(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                count += sum(any(w in line for w in NONFINITE_WARNINGS) for line in f)
    return count


def read_training(out, quick=False):
    """What the training stage's recipes wrote, as the judges take it."""
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
    }


def read_efficiency_rows(path):
    """Rows of an ``efficiency.csv`` (possibly cut short by a kill); [] if absent or unreadable."""
    from benchmarks import efficiency

    try:
        return efficiency.read_csv(path)
    except (OSError, ValueError, KeyError, TypeError):
        return []


def read_json(path, key=None):
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data.get(key) if key and isinstance(data, dict) else data


# --------------------------------------------------------------------------- #
# The stages: run (commands -> data, problem) and judge (data -> targets)
# --------------------------------------------------------------------------- #
class Context:
    """What every stage needs: output folder, options, the commands."""

    def __init__(self, out, quick=False, pom=DEFAULT_POM, python=sys.executable):
        self.out, self.quick, self.pom, self.python = out, quick, pom, python
        self.commands = stage_commands(out, quick, pom, python)

    def log(self, stage):
        return os.path.join(self.out, "logs", f"{stage}.log")


def fresh(folder):
    """Empties one of the check's own output folders (stale files of a previous run)."""
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder, exist_ok=True)


def run_check(ctx, deadline):
    folder = stage_folder(ctx.out, "check")
    fresh(folder)
    (name, argv), *_ = ctx.commands["check"]
    problem = run_command(name, argv, ctx.log("check"), deadline)
    return read_json(os.path.join(folder, "check.json")), problem


def run_training(ctx, deadline):
    work = os.path.join(ctx.out, "work")
    os.makedirs(work, exist_ok=True)
    with open(os.path.join(work, ".gitignore"), "w", encoding="utf-8") as f:
        f.write("# corpus and checkpoints of benchmarks/gpu_check.py: not for git\n*\n")
    for name in ("pretrain", "finetune"):  # the runs start from scratch (the corpus is kept: same options, reused)
        shutil.rmtree(os.path.join(work, name), ignore_errors=True)
    folder = stage_folder(ctx.out, "train")
    fresh(folder)
    problem = None
    for name, argv in ctx.commands["train"]:
        problem = run_command(name, argv, ctx.log("train"), deadline)
        if problem:
            break  # each command needs the previous one's output
    data = read_training(ctx.out, ctx.quick)
    copies = {"pretrain/train_steps_log.txt": "pretrain_steps_log.txt", "finetune/train_log.txt": "finetune_log.txt"}
    for src, dst in copies.items():
        if os.path.exists(os.path.join(work, src)):
            shutil.copyfile(os.path.join(work, src), os.path.join(folder, dst))
    data["commands"] = {name: shlex.join(argv) for name, argv in ctx.commands["train"]}
    write_json(os.path.join(folder, "training.json"), data)
    return data, problem


def run_efficiency(stage):
    def run(ctx, deadline):
        folder = stage_folder(ctx.out, stage)
        fresh(folder)
        (name, argv), *_ = ctx.commands[stage]
        problem = run_command(name, argv, ctx.log(stage), deadline)
        if stage == "floor":
            return read_json(os.path.join(folder, "floor.json"), "rows"), problem
        rows = read_efficiency_rows(os.path.join(folder, "efficiency.csv"))
        if stage.startswith("figure2_"):
            merge_figure2(ctx.out)
        return rows, problem

    return run


def merge_figure2(out):
    """``figure2/efficiency.{csv,md,png}``: the inference and training rows together (the paper's layout)."""
    from benchmarks import efficiency

    rows = [
        r
        for mode in ("infer", "train")
        for r in read_efficiency_rows(os.path.join(out, "figure2", mode, "efficiency.csv"))
    ]
    if not rows:
        return
    folder = os.path.join(out, "figure2")
    try:
        efficiency.write_csv(rows, os.path.join(folder, "efficiency.csv"))
        tables = [efficiency.markdown_table(rows, mode) for mode in ("infer", "train")]
        with open(os.path.join(folder, "efficiency.md"), "w", encoding="utf-8") as f:
            f.write(f"{rows[0].get('device', '')}, batch {rows[0].get('batch')}, {rows[0].get('dtype')}\n\n")
            f.write("\n\n".join(t for t in tables if t) + "\n")
        efficiency.plot(rows, os.path.join(folder, "efficiency.png"), f"Figure 2 | batch {rows[0].get('batch')}, bf16")
    except Exception as err:  # noqa: BLE001 -- the merged figure is a convenience: the stage's files are there
        print(f"[gpu-check] warning: merged figure2 not written: {type(err).__name__}: {err}", flush=True)


def judges(ctx):
    """``{stage: judge(data) -> targets}``, with this run's lengths and limits."""
    plan = settings(ctx.quick, ctx.pom)
    pom, seconds = ctx.pom, plan["figure_seconds"]
    return {
        "check": lambda data: T.judge_check((data or {}).get("rows"), "check", (data or {}).get("fused_kernel_calls")),
        "train": lambda data: (
            T.judge_pretraining((data or {}).get("pretrain"), "train")
            + T.judge_finetuning((data or {}).get("finetune"), "train")
        ),
        "figure2_infer": lambda rows: (
            T.judge_pom_vs_summarymixing(rows, "infer", "inference, bf16, batch 6", seconds, pom, "figure2_infer")
            + T.judge_memory_ratio(
                rows, "infer", "inference, bf16, batch 6", T.INFER_MEMORY_FACTOR, pom, "figure2_infer"
            )
        ),
        "figure2_train": lambda rows: (
            T.judge_pom_vs_summarymixing(rows, "train", "training step, bf16, batch 6", seconds, pom, "figure2_train")
            + T.judge_memory_ratio(
                rows, "train", "training step, bf16, batch 6", T.TRAIN_MEMORY_FACTOR, pom, "figure2_train"
            )
        ),
        "paper": lambda rows: T.judge_pom_vs_summarymixing(
            rows, "infer", "paper's protocol (forward with autograd, fp16, batch 6)", seconds, pom, "paper"
        ),
        "long": lambda rows: T.judge_long(rows, pom, "long"),
        "floor": lambda rows: T.judge_floor(rows, pom, "floor"),
    }


def runners():
    return {
        "check": run_check,
        "train": run_training,
        **{stage: run_efficiency(stage) for stage in STAGE_NAMES[2:]},
    }


def run_stages(ctx, stages, run=None, judge=None, clock=time.monotonic, on_progress=None, total_budget=TOTAL_BUDGET_S):
    """Runs ``stages`` (names) in order, each under its budget (and the total's),
    and judges each from what it measured, whatever happened to the others.
    Returns ``(stage records, targets)``; ``on_progress(records, targets)`` is
    called after every stage (the summary is rewritten then)."""
    run, judge = run or runners(), judge or judges(ctx)
    budgets = {s.name: (s.quick_budget_s if ctx.quick else s.budget_s) for s in STAGES}
    descriptions = {s.name: s.what for s in STAGES}
    start = clock()
    records, all_targets = [], []
    for name in stages:
        t0 = clock()
        deadline = min(t0 + budgets[name], start + total_budget)
        print(f"[gpu-check] {name}: {descriptions[name]} (budget {budgets[name]} s)", flush=True)
        if os.path.exists(ctx.log(name)):
            os.remove(ctx.log(name))  # the log of this run only
        data, problem = None, None
        if deadline - t0 < 1:
            problem = "not run: no time left in the total budget"
        else:
            try:
                data, problem = run[name](ctx, deadline)
            except Exception as err:  # noqa: BLE001 -- a failing stage is a result; the next stages run
                problem = f"{type(err).__name__}: {err}"
        try:
            found = judge[name](data)
        except Exception as err:  # noqa: BLE001
            found = [T.target(f"{name}_judged", name, "the stage's targets can be judged", False, repr(err))]
        record = {
            "name": name,
            "budget_s": budgets[name],
            "wall_s": round(clock() - t0, 1),
            "status": "FAIL" if problem else "ok",
            "error": problem,
            "folder": os.path.relpath(stage_folder(ctx.out, name), ctx.out),
            "log": os.path.relpath(ctx.log(name), ctx.out),
        }
        records.append(record)
        all_targets.extend(found)
        failed = sum(t["status"] != T.PASS for t in found)
        print(
            f"[gpu-check] {name}: {record['status']} in {record['wall_s']:.0f} s; {len(found)} targets, {failed} failed"
            + (f"; {problem}" if problem else ""),
            flush=True,
        )
        if on_progress:
            on_progress(records, all_targets)
    return records, all_targets


# --------------------------------------------------------------------------- #
# Summary
# --------------------------------------------------------------------------- #
def passed(records, targets):
    """Every target PASS and every stage finished."""
    return bool(targets) and all(t["status"] == T.PASS for t in targets) and all(r["status"] == "ok" for r in records)


def jsonable(value):
    """Non-finite floats as strings (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def write_json(path, data):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(jsonable(data), f, indent=1)
        f.write("\n")


def summary_markdown(env, records, targets, complete=True):
    ok = passed(records, targets)
    failed = sum(t["status"] != T.PASS for t in targets)
    failed_stages = sum(r["status"] != "ok" for r in records)
    state = ("PASS" if ok else "FAIL") if complete else "RUNNING"
    counts = f"{len(targets) - failed} of {len(targets)} targets passed"
    counts += f", {failed_stages} stage(s) failed" if failed_stages else ""
    lines = [
        f"# GPU check: {state} ({counts})",
        "",
        f"device: {env.get('device')} ({env.get('capability', '?')}, {env.get('memory_GiB', '?')} GiB); "
        f"date {env.get('date')}; torch {env.get('torch')} (CUDA {env.get('cuda')}); "
        f"speechbrain {env.get('speechbrain')}; {'quick' if env.get('quick') else 'full'} run; "
        f"{env.get('wall_s', 0) / 60:.1f} min",
        "",
        f"command: `{env.get('command')}`",
        "",
        "| target | stage | result | measured |",
        "|---|---|---|---|",
    ]
    for t in targets:
        lines.append(f"| {t['target']} | {t['stage']} | {t['status']} | {t['measured'].replace('|', '/')} |")
    lines += ["", "| stage | budget (s) | wall (s) | status | files | log |", "|---|---|---|---|---|---|"]
    for r in records:
        status = r["status"] if not r["error"] else f"FAIL: {r['error'].replace('|', '/')}"
        lines.append(f"| {r['name']} | {r['budget_s']} | {r['wall_s']:.0f} | {status} | {r['folder']}/ | {r['log']} |")
    lines.append("")
    return "\n".join(lines)


def write_summary(out, env, records, targets, complete=True):
    """Writes ``summary.md`` and ``summary.json`` into ``out``; returns whether the check passed."""
    os.makedirs(out, exist_ok=True)
    ok = passed(records, targets)
    write_json(
        os.path.join(out, "summary.json"),
        {
            "passed": ok,
            "complete": complete,
            "env": env,
            "stages": records,
            "targets": targets,
            "failed": [t["id"] for t in targets if t["status"] != T.PASS],
        },
    )
    with open(os.path.join(out, "summary.md"), "w", encoding="utf-8") as f:
        f.write(summary_markdown(env, records, targets, complete))
    return ok


# --------------------------------------------------------------------------- #
# Device
# --------------------------------------------------------------------------- #
def cuda_available():
    """Whether torch sees a CUDA device (does not create a CUDA context)."""
    import torch

    return torch.cuda.is_available() and torch.cuda.device_count() > 0


DEVICE_INFO = """
import json, platform, speechbrain, torch
p = torch.cuda.get_device_properties(0)
info = dict(device=p.name, capability=f"sm_{p.major}{p.minor}", memory_GiB=round(p.total_memory / 2**30, 1))
info.update(torch=torch.__version__, cuda=torch.version.cuda, speechbrain=speechbrain.__version__)
print(json.dumps(dict(info, python=platform.python_version())))
"""


def device_info(python=sys.executable):
    """The GPU's name and the versions, from a short subprocess (this process holds no CUDA context)."""
    proc = subprocess.run([python, "-c", DEVICE_INFO], capture_output=True, text=True, timeout=120, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError((proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- #
# Worker (the check stage, in its own process)
# --------------------------------------------------------------------------- #
def worker_check(out, device="cuda", **options):
    """``check.check`` on ``device``: ``check.json`` (rows, and how many times the
    fused PoM's Triton kernels ran) and ``check.md`` into ``out``."""
    import torch

    from benchmarks import check
    from pom.ops.polynomial import fused

    calls, product_state = [0], fused.product_state

    def counted(*args, **kwargs):  # the fused op's Triton entry (not reached where it takes the chunked path)
        calls[0] += 1
        return product_state(*args, **kwargs)

    fused.product_state = counted
    try:
        rows, ok = check.check(torch.device(device), **options)
    finally:
        fused.product_state = product_state
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "check.json"), {"rows": rows, "passed": ok, "fused_kernel_calls": calls[0]})
    with open(os.path.join(out, "check.md"), "w", encoding="utf-8") as f:
        f.write("Chunked and fused PoM vs plain PoM (relative L2 errors; check.py's defaults); ")
        f.write(f"Triton kernel calls of the fused PoM: {calls[0]}\n\n{check.markdown(rows)}\n")
    print(check.markdown(rows), f"\nTriton kernel calls of the fused PoM: {calls[0]}", flush=True)
    return 0 if ok and calls[0] else 1


# --------------------------------------------------------------------------- #
# Main
# --------------------------------------------------------------------------- #
def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", help="output folder (default benchmarks/runs/<gpu name>/)")
    p.add_argument("--quick", action="store_true", help="fewer lengths, steps and repeats, shorter budgets")
    p.add_argument("--stages", nargs="+", choices=STAGE_NAMES, default=STAGE_NAMES, help="stages to run (in order)")
    p.add_argument(
        "--pom",
        choices=sorted(T.POM_IMPLEMENTATIONS),
        default=DEFAULT_POM,
        help=f"the PoM model the efficiency targets judge (default {DEFAULT_POM})",
    )
    p.add_argument("--worker", choices=["check"], help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not cuda_available():
        print(
            "gpu-check: no CUDA GPU on this machine (torch.cuda.is_available() is False): nothing run", file=sys.stderr
        )
        return 2
    if args.worker:
        return worker_check(args.out or os.path.join(REPO, "benchmarks", "out"))
    try:
        env = device_info()
    except Exception as err:  # noqa: BLE001
        print(f"gpu-check: CUDA reports a GPU but it cannot be used ({err}): nothing run", file=sys.stderr)
        return 2
    out = os.path.abspath(args.out or default_out(env["device"]))
    stages = [name for name in STAGE_NAMES if name in args.stages]
    env.update(
        date=datetime.date.today().isoformat(),
        command="python " + " ".join([os.path.relpath(os.path.abspath(sys.argv[0]), REPO)] + sys.argv[1:]),
        quick=args.quick,
        pom=args.pom,
        out=out,
        wall_s=0.0,
    )
    ctx = Context(out, args.quick, args.pom)
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "commands.json"), {s: {n: shlex.join(a) for n, a in ctx.commands[s]} for s in stages})
    print(f"[gpu-check] {env['device']}: {len(stages)} stages into {out}", flush=True)
    start = time.monotonic()

    def progress(records, found):
        env["wall_s"] = round(time.monotonic() - start, 1)
        write_summary(out, env, records, found, complete=False)

    records, found = run_stages(ctx, stages, on_progress=progress)
    env["wall_s"] = round(time.monotonic() - start, 1)
    ok = write_summary(out, env, records, found)
    with open(os.path.join(out, "summary.md"), encoding="utf-8") as f:
        print("\n" + f.read(), flush=True)
    print(f"[gpu-check] {'PASS' if ok else 'FAIL'}: {os.path.join(out, 'summary.md')}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
