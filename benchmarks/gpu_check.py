"""One command that proves the GPU path (``make gpu-check``), in 8 minutes on one H100.

Stages, each a subprocess with a time budget (``gpu_stages.STAGES``; a stage
over its budget is killed and recorded as FAIL, with what it had measured; the
next stages still run; no stage starts once the whole check's budget is spent):

1. ``check``: chunked and fused PoM against plain PoM on CUDA, fp32 and bf16,
   outputs and gradients (``benchmarks/check.py``'s functions, in a fresh
   process: the fused kernels' first compiled run);
2. ``train``: a synthetic corpus (``pom.data.synthetic``, 0.3 h, or the one of
   the offline bundle), BEST-RQ pre-training in bf16 through the real recipe
   (``hparams/pretrain/pom.yaml``, small sizes and the fused PoM on the command
   line) run twice, to a step limit and then to a higher one (it must resume
   from the saved step), then CTC fine-tuning in fp16 (``hparams/finetune/pom.yaml``)
   run for one epoch and then resumed for more;
3. ``pretrain_cost``: ``benchmarks/pretrain_cost.py``, the paper's PoM,
   RelPosMHAXL and SummaryMixing configurations at full size, per-GPU batch and
   precision, and the projected wall time of their pre-training on 1, 2 and 8 GPUs;
4. ``figure2_infer``, ``figure2_train``: ``benchmarks/efficiency.py``, batch 6,
   10-80 s, bf16, inference and one training step; ``paper``: the paper's
   protocol (forward with autograd on, fp16); ``long``: one utterance of
   300-1200 s at batch 1; ``floor``: ``benchmarks/floor.py``, one PoM layer
   against its bf16 floor.

The targets (``benchmarks/targets.py``, ``pretrain_cost.judge``) are judged from
the measured rows and written to ``summary.md`` and ``summary.json`` with PASS /
FAIL and the numbers. Everything goes under ``benchmarks/runs/<gpu name>/``
(``--out``); the corpus and the recipes' checkpoints under its ``work/``
folder, which git ignores. Exit status: 0 if every target passed and every
stage finished, 1 otherwise, 2 without a GPU (one line, nothing run).

``make gpu-check`` runs this after its preflight (``benchmarks/gpu_preflight.py``:
the machine, the offline bundle, the imports), which passes ``--corpus`` and
what is left of the time as ``--budget-s``.

Examples
--------
python -m benchmarks.gpu_check                  # or: make gpu-check
python -m benchmarks.gpu_check --quick          # fewer lengths, steps and repeats (under 4 minutes)
python -m benchmarks.gpu_check --stages long floor --out /tmp/gpu-check
"""

import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

from benchmarks import targets as T
from benchmarks.gpu_reports import (
    judge_fused_training,
    read_efficiency_rows,
    read_json,
    write_json,
    write_summary,
)
from benchmarks.gpu_stages import (
    DEFAULT_POM,
    STAGE_NAMES,
    STAGES,
    read_training,
    run_command,
    settings,
    stage_commands,
    stage_folder,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = os.path.join(REPO, "benchmarks", "runs")
#: the whole check's budget, seconds (full, --quick): the stages' budgets add up to it
TOTAL_BUDGET_S = sum(s.budget_s for s in STAGES)
QUICK_TOTAL_BUDGET_S = sum(s.quick_budget_s for s in STAGES)


def safe_name(gpu_name):
    """A folder name from a device name: ``NVIDIA H100 80GB HBM3`` -> ``nvidia-h100-80gb-hbm3``."""
    return re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-") or "gpu"


def default_out(gpu_name):
    return os.path.join(RUNS, safe_name(gpu_name))


# --------------------------------------------------------------------------- #
# The stages: run (commands -> data, problem) and judge (data -> targets)
# --------------------------------------------------------------------------- #
class Context:
    """What every stage needs: output folder, options, the commands."""

    def __init__(self, out, quick=False, pom=DEFAULT_POM, python=sys.executable, corpus=None):
        self.out, self.quick, self.pom, self.python = out, quick, pom, python
        self.commands = stage_commands(out, quick, pom, python, corpus)

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
    data = read_training(ctx.out, ctx.quick, ctx.log("train"))
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
        if stage == "pretrain_cost":
            return read_json(os.path.join(folder, "pretrain_cost.json")), problem
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
            + judge_fused_training((data or {}).get("fused"), "train")
        ),
        "pretrain_cost": lambda data: judge_pretrain_cost(data, plan["cost_experiments"]),
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


def judge_pretrain_cost(data, experiments):
    from benchmarks import pretrain_cost  # torch and the recipes: only when judged

    return pretrain_cost.judge(data, "pretrain_cost", experiments)


def runners():
    return {
        "check": run_check,
        "train": run_training,
        **{stage: run_efficiency(stage) for stage in STAGE_NAMES[2:]},
    }


def run_stages(ctx, stages, run=None, judge=None, clock=time.monotonic, on_progress=None, total_budget=None):
    """Runs ``stages`` (names) in order, each under its budget (and the total's),
    and judges each from what it measured, whatever happened to the others.
    Returns ``(stage records, targets)``; ``on_progress(records, targets)`` is
    called after every stage (the summary is rewritten then)."""
    run, judge = run or runners(), judge or judges(ctx)
    if total_budget is None:
        total_budget = QUICK_TOTAL_BUDGET_S if ctx.quick else TOTAL_BUDGET_S
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
    p.add_argument("--corpus", help="a folder holding a synthetic LibriSpeech/ made in advance (the bundle's)")
    p.add_argument(
        "--budget-s",
        type=float,
        help=f"seconds for all the stages (default {TOTAL_BUDGET_S}, --quick {QUICK_TOTAL_BUDGET_S}; the preflight "
        "passes what is left of the whole check's 8 or 4 minutes)",
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
        command=shlex.join(["python", "-m", "benchmarks.gpu_check", *(sys.argv[1:] if argv is None else argv)]),
        quick=args.quick,
        pom=args.pom,
        out=out,
        wall_s=0.0,
    )
    ctx = Context(out, args.quick, args.pom, corpus=args.corpus and os.path.abspath(args.corpus))
    total = QUICK_TOTAL_BUDGET_S if args.quick else TOTAL_BUDGET_S
    if args.budget_s is not None:
        total = min(total, args.budget_s)
    env["budget_s"] = total
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "commands.json"), {s: {n: shlex.join(a) for n, a in ctx.commands[s]} for s in stages})
    print(f"[gpu-check] {env['device']}: {len(stages)} stages into {out}", flush=True)
    start = time.monotonic()

    def progress(records, found):
        env["wall_s"] = round(time.monotonic() - start, 1)
        write_summary(out, env, records, found, complete=False)

    records, found = run_stages(ctx, stages, on_progress=progress, total_budget=total)
    env["wall_s"] = round(time.monotonic() - start, 1)
    ok = write_summary(out, env, records, found)
    with open(os.path.join(out, "summary.md"), encoding="utf-8") as f:
        print("\n" + f.read(), flush=True)
    print(f"[gpu-check] {'PASS' if ok else 'FAIL'}: {os.path.join(out, 'summary.md')}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
