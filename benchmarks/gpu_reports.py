"""What ``make gpu-check`` reads and writes: the logs and files of its stages
(the pre-training's steps log and checkpoints, the fine-tuning's train log,
``efficiency.csv``), read into plain rows for the judges of
``benchmarks/targets.py``, and the ``summary.md`` / ``summary.json`` it writes
with PASS / FAIL per target (``benchmarks/gpu_check.py`` runs the stages).

Example
-------
>>> records = [{"name": "check", "status": "ok", "error": "", "budget_s": 60, "wall_s": 12.0,
...             "folder": "check", "log": "check/log.txt"}]
>>> targets = [{"id": "fused", "target": "fused = plain", "stage": "check", "status": "PASS", "measured": "1e-6"}]
>>> passed(records, targets)
True
>>> summary_markdown({"device": "H100"}, records, targets).splitlines()[0]
'# GPU check: PASS (1 of 1 targets passed)'
"""

import glob
import json
import math
import os
import re

from benchmarks import targets as T

#: warnings of SpeechBrain and of the recipes about non-finite values
NONFINITE_WARNINGS = ("Loss is not finite", "Patience not yet exhausted", "contain NaN or Inf", "Non-finite")
#: the fused PoM's warning when it cannot run its Triton kernels (pom/ops/polynomial/fused.py)
FUSED_FALLBACK_WARNING = "using the chunked PyTorch path"
IMPLEMENTATION = re.compile(r"^\s*implementation:\s*([A-Za-z_]+)", re.MULTILINE)


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


def read_implementation(path):
    """The PoM ``implementation`` of a recipe's saved ``hyperparams.yaml`` (``"plain"``
    when the file names none; None when there is no file)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            found = IMPLEMENTATION.findall(f.read())
    except OSError:
        return None
    return found[-1] if found else "plain"


def count_lines(path, text):
    """Lines of a file holding ``text`` (0 without the file)."""
    if not path or not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8", errors="replace") as f:
        return sum(text in line for line in f)


def count_nonfinite_warnings(*paths):
    count = 0
    for path in paths:
        if os.path.exists(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                count += sum(any(w in line for w in NONFINITE_WARNINGS) for line in f)
    return count


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


def judge_fused_training(fused, stage="train"):
    """The training stage trained PoM through the fused Triton kernels: both
    recipes' saved hyperparameters say ``implementation: fused`` and the log has
    no fallback warning."""
    fused = fused or {}
    ok = fused.get("pretrain") == fused.get("finetune") == "fused" and not fused.get("fallback_warnings")
    measured = (
        f"pre-training: {fused.get('pretrain') or 'not run'}, fine-tuning: {fused.get('finetune') or 'not run'}; "
        f"fallback warnings: {fused.get('fallback_warnings', 0)}"
    )
    claim = "both recipes train the PoM through the fused Triton kernels (no fallback to the chunked path)"
    return [T.target("train_fused", stage, claim, ok, measured)]


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
