"""What the paper's pre-training costs on GPUs of this kind: the real experiment
files (``hparams/pretrain/pom.yaml``, ``relposmhaxl.yaml``, ``summarymixing.yaml``)
at their full size, per-GPU batch and precision, run through the pre-training
recipe's own step (``BestRQBrain.fit_batch``: features, normalisation, masking,
quantizer, CNN, encoder, head, loss, scaled backward, clipping, AdamW) for a few
dozen steps, and the wall time of the whole pre-training projected from them on
1, 2 and 8 GPUs.

Each experiment's model is built once. Its batches are those the recipe's
global batch plan (``pom.recipe.batching``) gives each GPU count: with
``global_batch_seconds`` 5600 and ``max_batch_len`` 1400, 1400 s per GPU and 4
or 2 accumulated steps on 1 or 2 GPUs, 700 s and none on 8. Per batch size:

* ``typical``: random audio cut into utterances of 12.3 s (the mean of
  LibriSpeech's 960 h), as many as the batch holds: ``--warmup`` steps, then
  ``--steps`` timed steps (median, synchronized), and the peak allocated memory
  (weights, gradients and optimizer state included);
* ``longest`` (the largest batch only): utterances of 35 s (LibriSpeech's
  longest), two steps: the memory of the longest bucket, where attention costs most.

Projection: optimizer steps = min(``optimizer_step_limit``, ``number_of_epochs`` x
the train splits' audio / ``global_batch_seconds``), batches full; seconds per
optimizer step on N GPUs = accumulation(N) x the step time of that batch; also
the time to the step limit alone (the paper's text: 200k steps). Left out:
data loading, validation, checkpoints, the padding of dynamic batches and DDP's
gradient all-reduce, so the 2- and 8-GPU figures are the linear-scaling bound.
Writes ``pretrain_cost.json`` and ``pretrain_cost.md`` into ``--out`` after each experiment.

Examples
--------
python -m benchmarks.pretrain_cost --device cuda --out benchmarks/runs/h100/pretrain_cost
python -m benchmarks.pretrain_cost --device cpu --tiny --steps 2 --warmup 1 --set max_batch_len=8 --out /tmp/cost
"""

import argparse
import gc
import importlib.util
import json
import math
import os
import statistics
import sys
import tempfile
import time

import torch

from benchmarks import common
from benchmarks import targets as T
from pom.recipe.batching import global_batch_plan
from pom.recipe.hparams import load_hparams

PRETRAIN_SCRIPT = os.path.join(common.REPO, "recipes", "LibriSpeech", "pretrain", "train.py")
EXPERIMENTS = ["pom", "relposmhaxl", "summarymixing"]
GPUS = [1, 2, 8]
#: LibriSpeech's training splits, hours (Panayotov et al. 2015, Table 1)
LIBRISPEECH_HOURS = {"train-clean-100": 100.6, "train-clean-360": 363.6, "train-other-500": 496.7}
#: mean utterance of the 960 h (281,241 utterances) and LibriSpeech's longest, seconds
TYPICAL_SECONDS, LONGEST_SECONDS = 12.3, 35.0
#: no intermediate logging, no checkpoint: only the steps run
QUIET = {"log_interval": 10**9, "batch_log": None, "use_tensorboard": False, "use_wandb": False}
#: a tiny encoder for smoke runs on CPU (--tiny)
TINY = {"d_model": 32, "num_layers": 1, "d_ffn": 64, "kernel_size": 7, "cnn_channels": [8, 8],
        "cnn_output_size": 160, "cb_vocab": 64, "nhead": 2}  # fmt: skip


# --------------------------------------------------------------------------- #
# Arithmetic: batch plans, step counts, projection (no device)
# --------------------------------------------------------------------------- #
def batch_plans(hparams, gpus=GPUS):
    """``{N: GlobalBatchPlan}`` of the recipe on N GPUs (``global_batch_seconds``
    null: SpeechBrain's behaviour, the global batch grows with the GPUs)."""
    cap = float(hparams["max_batch_len"])
    plans = {}
    for n in gpus:
        target = hparams.get("global_batch_seconds") or cap * n * int(hparams["grad_accumulation_factor"])
        plans[n] = global_batch_plan(float(target), cap, n)
    return plans


def planned_steps(hparams, hours=LIBRISPEECH_HOURS):
    """The optimizer steps of the whole pre-training: the epoch limit or the
    step limit, whichever comes first (full batches)."""
    train_hours = sum(hours[split] for split in hparams["train_splits"])
    global_batch = batch_plans(hparams, [1])[1].global_batch
    by_epochs = int(hparams["number_of_epochs"]) * train_hours * 3600 / global_batch
    limit = int(hparams["optimizer_step_limit"])
    return {
        "train_hours": round(train_hours, 1),
        "global_batch_s": global_batch,
        "epochs": hparams["number_of_epochs"],
        "steps_by_epochs": round(by_epochs),
        "step_limit": limit,
        "steps": round(min(limit, by_epochs)),
    }


def project(step_seconds, hparams, gpus=GPUS, hours=LIBRISPEECH_HOURS):
    """``{N: {per_device_s, accumulation, step_s, wall_h, wall_h_step_limit}}``
    from ``step_seconds`` (per-device batch seconds -> measured seconds of one
    step); None where that batch was not measured."""
    plan = planned_steps(hparams, hours)
    out = {}
    for n, batch in batch_plans(hparams, gpus).items():
        measured = step_seconds.get(round(batch.per_device, 3))
        step = None if measured is None else batch.grad_accumulation_factor * measured
        out[n] = {
            "per_device_s": round(batch.per_device, 3),
            "accumulation": batch.grad_accumulation_factor,
            "step_s": step,
            "wall_h": None if step is None else plan["steps"] * step / 3600,
            "wall_h_step_limit": None if step is None else plan["step_limit"] * step / 3600,
        }
    return out


def duration(hours):
    """``"12.0 h"``, ``"3.4 d"`` above two days."""
    if hours is None or not math.isfinite(hours):
        return "not measured"
    return f"{hours / 24:.1f} d" if hours >= 48 else f"{hours:.1f} h"


# --------------------------------------------------------------------------- #
# Measurement
# --------------------------------------------------------------------------- #
def load_recipe():
    """The pre-training recipe's module (its ``BestRQBrain``), without running it."""
    spec = importlib.util.spec_from_file_location("pom_pretrain_recipe", PRETRAIN_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic_batch(hparams, total_seconds, utterance_seconds, seed=0):
    """A batch as the recipe's loader gives it (``(wavs, lens, mask, ids)``,
    BEST-RQ's mask): random audio, ``total_seconds`` cut into utterances."""
    from speechbrain.lobes.models.BESTRQ import brq_mask_collate_fn

    rate = int(hparams["sample_rate"])
    count = max(1, int(total_seconds // utterance_seconds))
    samples = int(round(min(utterance_seconds, total_seconds) * rate))
    generator = torch.Generator().manual_seed(seed)
    utterances = [{"id": f"u{i}", "sig": 0.1 * torch.randn(samples, generator=generator)} for i in range(count)]
    hop = rate * int(hparams["hop_length"]) // 1000
    wavs, lens, mask = brq_mask_collate_fn(
        utterances,
        get_out_len_fn=lambda n: (n // hop + 1).to(torch.long),
        mask_prob=hparams["mask_prob"],
        mask_length=hparams["mask_length"],
        n_mels=hparams["n_mels"],
    )
    return (wavs, lens, mask, [u["id"] for u in utterances]), count, samples / rate


def build_brain(recipe, hparams, device, precision):
    """The recipe's Brain on ``device``, optimizer made, in training mode."""
    import speechbrain as sb

    brain = recipe.BestRQBrain(
        modules=hparams["modules"],
        opt_class=hparams["optimizer"],
        hparams=hparams,
        run_opts={"device": str(device), "precision": precision},
        checkpointer=None,
    )
    brain.init_optimizers()
    brain.skipped_steps = 0
    brain.grad_accumulation_factor = 1  # one optimizer step per batch: accumulation is applied in the projection
    brain.on_stage_start(sb.Stage.TRAIN)
    brain.modules.train()
    return brain


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_steps(brain, batch, steps, warmup, device):
    """``(step times, peak allocated bytes, losses)`` of ``warmup + steps`` training steps."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    for i in range(warmup + steps):
        sync(device)
        start = time.perf_counter()
        losses.append(float(brain.fit_batch(batch)))
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else math.nan
    return times, peak, losses


def measure_experiment(recipe, name, device, steps, warmup, changes, gpus=GPUS):
    """Rows of one experiment: ``typical`` for each per-device batch of ``gpus``,
    ``longest`` for the largest; and its hparams (for the projection)."""
    from pom.parameters import count_parameters

    with tempfile.TemporaryDirectory(prefix="pom-cost-") as tmp:
        hparams = load_hparams(
            os.path.join(common.PRETRAIN_HPARAMS, name + ".yaml"),
            {"data_folder": tmp, "output_folder": tmp, **QUIET, **changes},
        )
    precision = hparams["precision"] if device.type == "cuda" else "fp32"
    sizes = sorted({round(plan.per_device, 3) for plan in batch_plans(hparams, gpus).values()}, reverse=True)
    cases = [("typical", size, TYPICAL_SECONDS, steps, warmup) for size in sizes]
    cases.append(("longest", sizes[0], LONGEST_SECONDS, 1, 1))
    brain = build_brain(recipe, hparams, device, precision)
    params = count_parameters(torch.nn.ModuleList([hparams["CNN"], hparams["encoder"], hparams["head"]]))
    rows = []
    for case, size, utterance, n_steps, n_warmup in cases:
        batch, count, seconds = synthetic_batch(hparams, size, utterance)
        row = dict(experiment=name, case=case, per_device_s=size, utterances=count, utterance_s=round(seconds, 2))
        row.update(precision=precision, params_M=round(params / 1e6, 2), status="ok", losses_finite=None)
        row.update(step_s=math.nan, step_s_min=math.nan, peak_GiB=math.nan)
        try:
            times, peak, losses = run_steps(brain, batch, n_steps, n_warmup, device)
            row.update(
                step_s=round(statistics.median(times), 4),
                step_s_min=round(min(times), 4),
                peak_GiB=round(peak / 2**30, 2),
                losses_finite=all(math.isfinite(x) for x in losses),
                skipped_steps=brain.skipped_steps,
            )
        except Exception as err:  # noqa: BLE001 -- out of memory (or any failure) is a result
            row["status"] = "oom" if common.is_oom(err) else f"error: {type(err).__name__}: {str(err)[:160]}"
            brain.optimizer.zero_grad(set_to_none=True)
        finally:
            batch = None
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
        print(f"{name} {case}: {describe_row(row)} ({count} utterances)", flush=True)
    return rows, hparams


# --------------------------------------------------------------------------- #
# Report and targets
# --------------------------------------------------------------------------- #
def summarize(rows, hparams, gpus=GPUS):
    """Plan and projection of one experiment from its rows."""
    typical = {r["per_device_s"]: r["step_s"] for r in rows if r["case"] == "typical" and r["status"] == "ok"}
    return {"plan": planned_steps(hparams), "projection": project(typical, hparams, gpus)}


def memory(gib):
    return f"{gib:.1f} GiB" if math.isfinite(gib) else "n/a (CPU)"


def describe_row(row):
    """``"1400 s of 12.3 s utterances: 0.250 s/step, 24.1 GiB"`` (or the failure)."""
    head = f"{row['per_device_s']:g} s of {row['utterance_s']:g} s utterances: "
    if row["status"] != "ok":
        return head + row["status"]
    finite = "" if row.get("losses_finite") in (None, True) else ", non-finite loss"
    return head + f"{row['step_s']:.3f} s/step, {memory(row['peak_GiB'])}{finite}"


def markdown(data):
    """Tables: the measured steps, then the projected pre-training."""
    env = data.get("env", {})
    lines = [common.environment_line(env) if env else "", ""]
    lines += [
        "| experiment | params | batch per GPU | utterances | s / step | peak memory |",
        "|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        ok = r["status"] == "ok"
        cells = [
            f"{r['experiment']} ({r['precision']})",
            f"{r['params_M']} M",
            f"{r['per_device_s']:g} s ({r['case']}: {r['utterance_s']:g} s each)",
            str(r["utterances"]),
            f"{r['step_s']:.3f}" if ok else r["status"],
            memory(r["peak_GiB"]) if ok else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    for name, item in data["experiments"].items():
        plan = item["plan"]
        lines += [
            "",
            f"**{name}**: {plan['steps']:,} optimizer steps of {plan['global_batch_s']:g} s ({plan['epochs']} epochs "
            f"of {plan['train_hours']} h = {plan['steps_by_epochs']:,} steps; step limit {plan['step_limit']:,})",
            "",
            "| GPUs | batch per GPU x accumulation | s / optimizer step | pre-training | to the step limit |",
            "|---|---|---|---|---|",
        ]
        for n, p in item["projection"].items():
            step = f"{p['step_s']:.3f}" if p["step_s"] is not None else "not measured"
            cells = [str(n), f"{p['per_device_s']:g} s x {p['accumulation']}", step]
            cells += [duration(p["wall_h"]), duration(p["wall_h_step_limit"])]
            lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Left out: data loading, validation, checkpoints, batch padding, DDP's all-reduce "
        "(the multi-GPU times assume linear scaling).",
        "",
    ]
    return "\n".join(lines)


def judge(data, stage="pretrain_cost", experiments=EXPERIMENTS):
    """One target per experiment: every batch ran (no out of memory, finite losses)."""
    data = data or {}
    found = []
    for name in experiments:
        rows = [r for r in data.get("rows", []) if r["experiment"] == name]
        ok = bool(rows) and all(r["status"] == "ok" and r.get("losses_finite") for r in rows)
        measured = "; ".join(describe_row(r) for r in rows) or "not measured"
        projection = data.get("experiments", {}).get(name, {}).get("projection", {})
        if rows and projection:
            measured += "; projected " + ", ".join(f"{n} GPU: {duration(p['wall_h'])}" for n, p in projection.items())
        claim = f"{name}: full size, per-GPU batch and precision of its YAML train on this GPU (no OOM, finite loss)"
        found.append(T.target(f"pretrain_cost_{name}", stage, claim, ok, measured))
    return found


def write(out, data):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "pretrain_cost.json"), "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, default=str)
    with open(os.path.join(out, "pretrain_cost.md"), "w", encoding="utf-8") as f:
        f.write(markdown(data))


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common.add_device_arguments(p)
    p.add_argument("--experiments", nargs="+", default=EXPERIMENTS, choices=common.experiments())
    p.add_argument("--steps", type=int, default=20, help="timed steps per batch size")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--gpus", nargs="+", type=int, default=GPUS, help="GPU counts of the projection")
    p.add_argument("--tiny", action="store_true", help="a tiny encoder (smoke runs on CPU)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="YAML overrides (e.g. max_batch_len=8)")
    p.add_argument("--out", default=os.path.join(common.REPO, "benchmarks", "out", "pretrain_cost"))
    args = p.parse_args(argv)
    bad = [item for item in args.set if "=" not in item]
    if bad:
        p.error(f"--set takes KEY=VALUE, got {bad}")
    args.device = common.open_device(args, p)
    return args


def main(argv=None):
    import yaml

    args = parse_args(argv)
    changes = dict(TINY if args.tiny else {})
    changes.update({k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)})
    recipe = load_recipe()
    data = {"env": common.environment(args.device), "rows": [], "experiments": {}}
    for name in args.experiments:
        rows, hparams = measure_experiment(recipe, name, args.device, args.steps, args.warmup, changes, args.gpus)
        data["rows"] += rows
        data["experiments"][name] = summarize(rows, hparams, args.gpus)
        hparams = None
        gc.collect()
        if args.device.type == "cuda":
            torch.cuda.empty_cache()
        write(args.out, data)
    print(markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
