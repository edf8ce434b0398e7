"""benchmarks/pretrain_cost.py on CPU: the arithmetic of its projection (the
recipe's global batch plan, the step count of the paper's pre-training, wall
times), a real run of the recipe's training step at tiny sizes, its report and
its targets. Nothing is timed here: the times of the run are only carried
through to the projection."""

import json
import math
import os

import pytest

from benchmarks import pretrain_cost as cost
from benchmarks import targets as T
from pom.recipe.hparams import load_hparams

#: the keys of the paper's batch and schedule, as hparams/pretrain/base.yaml sets them
PAPER = {
    "train_splits": ["train-clean-100", "train-clean-360", "train-other-500"],
    "global_batch_seconds": 5600,
    "max_batch_len": 1400,
    "grad_accumulation_factor": 2,
    "number_of_epochs": 70,
    "optimizer_step_limit": 200000,
}


def test_the_experiment_files_hold_the_papers_batch_and_schedule(tmp_path):
    for name in cost.EXPERIMENTS:
        folders = {"data_folder": str(tmp_path), "output_folder": str(tmp_path)}
        hp = load_hparams(os.path.join(cost.common.PRETRAIN_HPARAMS, f"{name}.yaml"), {**folders, **cost.TINY})
        assert {key: hp[key] for key in PAPER} == PAPER, name
        assert hp["precision"] == "fp16"  # the paper's pre-training precision


def test_batch_plans_and_steps():
    plans = cost.batch_plans(PAPER)
    assert {n: (p.per_device, p.grad_accumulation_factor) for n, p in plans.items()} == {
        1: (1400.0, 4),
        2: (1400.0, 2),
        8: (700.0, 1),
    }
    plan = cost.planned_steps(PAPER)
    # 70 epochs of 960.9 h at 5600 s per step: 43.2k steps (the authors' "about 45k"), before the 200k limit
    assert plan["train_hours"] == 960.9 and plan["global_batch_s"] == 5600
    assert (
        plan["steps_by_epochs"] == pytest.approx(70 * 960.9 * 3600 / 5600, abs=1)
        and plan["steps"] == plan["steps_by_epochs"]
    )
    assert plan["step_limit"] == 200000
    short = cost.planned_steps(dict(PAPER, optimizer_step_limit=1000))
    assert short["steps"] == 1000  # the step limit comes first
    # SpeechBrain's behaviour (no global_batch_seconds): the global batch grows with the GPUs
    grows = cost.batch_plans(dict(PAPER, global_batch_seconds=None))
    assert [(p.per_device, p.grad_accumulation_factor, p.global_batch) for p in grows.values()] == [
        (1400.0, 2, 2800.0),
        (1400.0, 2, 5600.0),
        (1400.0, 2, 22400.0),
    ]


def test_projection():
    steps = 70 * 960.9 * 3600 / 5600
    projection = cost.project({1400.0: 0.25, 700.0: 0.13}, PAPER)
    assert projection[1]["step_s"] == pytest.approx(1.0) and projection[1]["accumulation"] == 4
    assert projection[1]["wall_h"] == pytest.approx(round(steps) / 3600)
    assert projection[1]["wall_h_step_limit"] == pytest.approx(200000 / 3600)
    assert projection[2]["step_s"] == pytest.approx(0.5) and projection[2]["wall_h"] == pytest.approx(
        round(steps) / 7200
    )
    assert projection[8] == {
        "per_device_s": 700.0,
        "accumulation": 1,
        "step_s": 0.13,
        "wall_h": pytest.approx(round(steps) * 0.13 / 3600),
        "wall_h_step_limit": pytest.approx(200000 * 0.13 / 3600),
    }
    missing = cost.project({1400.0: 0.25}, PAPER)  # the 700 s batch was not measured (out of memory, killed)
    assert missing[8]["step_s"] is None and missing[8]["wall_h"] is None and missing[1]["step_s"] == 1.0
    assert [cost.duration(h) for h in (12.04, 47.9, 55.6, None, math.nan)] == [
        "12.0 h",
        "47.9 h",
        "2.3 d",
        "not measured",
        "not measured",
    ]


@pytest.fixture
def keep_threads():
    """The script sets torch's CPU threads; give the test session its own back."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_a_tiny_run_through_the_recipes_step(tmp_path, capsys, keep_threads):
    """The real experiment files at tiny sizes, 4 s utterances, fp32 on CPU: each batch of
    the plan runs the recipe's fit_batch; the report and the targets follow from the rows."""
    out = tmp_path / "cost"
    options = ["--device", "cpu", "--threads", "1", "--tiny", "--steps", "2", "--warmup", "1"]
    options += ["--set", "max_batch_len=8", "global_batch_seconds=32", "--out", str(out)]
    assert cost.main(options) == 0
    data = json.loads((out / "pretrain_cost.json").read_text())
    rows = data["rows"]
    assert [(r["experiment"], r["case"], r["per_device_s"]) for r in rows] == [
        (name, case, size)
        for name in cost.EXPERIMENTS
        for case, size in (("typical", 8), ("typical", 4), ("longest", 8))
    ]
    assert all(
        r["status"] == "ok" and r["losses_finite"] and r["step_s"] > 0 and r["precision"] == "fp32" for r in rows
    )
    assert all(r["utterances"] == 1 for r in rows)  # 8 s batches: one utterance, cut to the batch
    for name in cost.EXPERIMENTS:
        item = data["experiments"][name]
        assert item["plan"]["steps"] == 200000  # 32 s steps: the step limit comes first
        typical = {r["per_device_s"]: r["step_s"] for r in rows if r["experiment"] == name and r["case"] == "typical"}
        projection = {int(n): p for n, p in item["projection"].items()}
        assert projection[1]["step_s"] == pytest.approx(4 * typical[8]) and projection[1]["per_device_s"] == 8
        assert projection[8]["step_s"] == pytest.approx(typical[4]) and projection[8]["accumulation"] == 1
        assert projection[2]["wall_h"] == pytest.approx(200000 * 2 * typical[8] / 3600)
    text = (out / "pretrain_cost.md").read_text()
    assert "| pom (fp32) | " in text and "| 8 s (longest: 8 s each) | 1 | " in text and "n/a (CPU)" in text
    assert "**relposmhaxl**: 200,000 optimizer steps of 32 s (70 epochs of 960.9 h" in text
    assert "| 1 | 8 s x 4 | " in text and "| 8 | 4 s x 1 | " in text
    found = cost.judge(data)
    assert [t["id"] for t in found] == ["pretrain_cost_pom", "pretrain_cost_relposmhaxl", "pretrain_cost_summarymixing"]
    assert all(t["status"] == T.PASS for t in found) and "projected 1 GPU: " in found[0]["measured"]


def test_targets():
    rows = []
    for name in cost.EXPERIMENTS:
        for case, size, status in (
            ("typical", 1400, "ok"),
            ("longest", 1400, "oom" if name == "relposmhaxl" else "ok"),
        ):
            utterance = 12.3 if case == "typical" else 35.0
            row = dict(experiment=name, case=case, per_device_s=size, utterance_s=utterance, status=status)
            rows.append(dict(row, step_s=0.3, peak_GiB=30.0, losses_finite=True if status == "ok" else None))
    rows[0]["losses_finite"] = False  # pom: a non-finite loss (fp16 overflow)
    found = {t["id"]: t for t in cost.judge({"rows": rows})}
    assert (
        found["pretrain_cost_pom"]["status"] == T.FAIL and "non-finite loss" in found["pretrain_cost_pom"]["measured"]
    )
    assert found["pretrain_cost_relposmhaxl"]["status"] == T.FAIL
    assert found["pretrain_cost_relposmhaxl"]["measured"] == (
        "1400 s of 12.3 s utterances: 0.300 s/step, 30.0 GiB; 1400 s of 35 s utterances: oom"
    )
    assert found["pretrain_cost_summarymixing"]["status"] == T.PASS
    assert all(t["status"] == T.FAIL and t["measured"] == "not measured" for t in cost.judge(None))
