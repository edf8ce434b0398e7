"""Tests of the GPU check (benchmarks/gpu_check.py, benchmarks/targets.py) without a GPU.

The no-GPU exit, the output naming, the command lines (parsed by the scripts and
recipes that will run them), the log parsers (on files written by SpeechBrain's
own logger), the target judging on synthetic measured rows (passing and
failing), the stage loop with fake stages and the summary files. Nothing is
timed and nothing runs on a device.
"""

import json
import math
import os
import subprocess
import sys
import time

import pytest
import torch
import yaml
from finetune_helpers import recipe_check

from benchmarks import efficiency, gpu_check, gpu_reports, gpu_stages, pretrain_cost
from benchmarks import targets as T

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def by_id(found):
    return {t["id"]: t for t in found}


def option(argv, key):
    """The value of ``--key=value`` (the last one) in a command line."""
    values = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{key}=")]
    return values[-1] if values else None


# --------------------------------------------------------------------------- no GPU, naming
def test_no_gpu_exits_2_with_one_line_before_anything(tmp_path, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise AssertionError("ran something without a GPU")

    monkeypatch.setattr(gpu_check, "cuda_available", lambda: False)
    monkeypatch.setattr(gpu_check, "device_info", refuse)
    monkeypatch.setattr(gpu_check, "run_stages", refuse)
    out = tmp_path / "out"
    assert gpu_check.main(["--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert "no CUDA GPU" in captured.err
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_no_gpu_command_line(tmp_path):
    """The real command on this GPU-less machine: status 2, one line, nothing written."""
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out.exists()


def test_output_naming(monkeypatch, tmp_path):
    assert gpu_check.safe_name("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert gpu_check.safe_name("NVIDIA A100-SXM4-40GB") == "nvidia-a100-sxm4-40gb"
    assert gpu_check.safe_name("  Tesla V100 / PCIe (32 GB) ") == "tesla-v100-pcie-32-gb"
    assert gpu_check.safe_name("???") == "gpu"
    assert gpu_check.default_out("NVIDIA H200") == os.path.join(ROOT, "benchmarks", "runs", "nvidia-h200")
    assert gpu_stages.stage_folder("/o", "figure2_infer") == os.path.join("/o", "figure2", "infer")
    assert gpu_stages.stage_folder("/o", "long") == os.path.join("/o", "long")


# --------------------------------------------------------------------------- command lines
@pytest.mark.parametrize("quick", [False, True])
def test_command_lines(quick, tmp_path, monkeypatch):
    out = str(tmp_path / "run")
    commands = gpu_stages.stage_commands(out, quick=quick)
    assert list(commands) == gpu_stages.STAGE_NAMES
    plan = gpu_stages.settings(quick)
    assert all(argv[0] == sys.executable for cmds in commands.values() for _, argv in cmds)

    # stage 1: the worker of this script (every benchmark runs as a module, from the repository root)
    (_, check), *_ = commands["check"]
    assert check[1:] == ["-m", "benchmarks.gpu_check", "--worker", "check", "--out", f"{out}/check"]

    # stage 2: corpus, pre-training twice (bf16, higher limit, same folder), fine-tuning twice (fp16)
    train = dict(commands["train"])
    assert list(train) == ["corpus", "pretrain_1", "pretrain_2", "finetune_1", "finetune_2"]
    assert train["corpus"][1:5] == ["-m", "pom.data.synthetic", "--out", f"{out}/work/corpus"]
    assert train["corpus"][train["corpus"].index("--hours") + 1] == "0.3"
    pre1, pre2, ft1, ft2 = (train[n] for n in ("pretrain_1", "pretrain_2", "finetune_1", "finetune_2"))
    for argv in (pre1, pre2, ft1, ft2):
        assert "--device=cuda" in argv
        assert option(argv, "data_folder") == f"{out}/work/corpus/LibriSpeech"
        for key, value in gpu_stages.TRAIN_MODEL.items():  # the same sizes in both stages
            assert option(argv, key) == str(value)
    assert pre1[1].endswith("recipes/LibriSpeech/pretrain/train.py") and pre1[2].endswith("hparams/pretrain/pom.yaml")
    for argv in (pre1, pre2, ft1, ft2):  # both recipes train PoM through the fused kernels
        assert option(argv, "mixer_options") == "{degree: 2, expansion: 2, implementation: fused}"
    assert ft1[1].endswith("recipes/LibriSpeech/finetune/train.py") and ft1[2].endswith("hparams/finetune/pom.yaml")
    assert option(pre1, "precision") == option(pre2, "precision") == "bf16"
    assert option(ft1, "precision") == option(ft2, "precision") == "fp16"
    assert option(pre1, "output_folder") == option(pre2, "output_folder") == f"{out}/work/pretrain"
    assert [int(option(a, "optimizer_step_limit")) for a in (pre1, pre2)] == plan["pretrain_steps"]
    assert plan["pretrain_steps"][0] < plan["pretrain_steps"][1] and plan["pretrain_steps"][1] >= 150
    assert option(ft1, "pretrained_path") == f"{out}/work/pretrain"
    assert option(ft1, "output_folder") == option(ft2, "output_folder") == f"{out}/work/finetune"
    assert [int(option(a, "number_of_epochs")) for a in (ft1, ft2)] == plan["finetune_epochs"]

    # stage 3: pretrain_cost.py; 4: efficiency.py (Figure 2, the paper's protocol, one long utterance), floor.py
    def args_of(stage):
        (_, argv), *_ = commands[stage]
        return argv

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the scripts parse --device cuda
    cost = args_of("pretrain_cost")
    assert cost[1:3] == ["-m", "benchmarks.pretrain_cost"]
    cost_args = pretrain_cost.parse_args(cost[3:])
    assert cost_args.device.type == "cuda" and cost_args.experiments == plan["cost_experiments"]
    assert cost_args.experiments == (["pom"] if quick else ["pom", "relposmhaxl", "summarymixing"])
    assert cost_args.steps == plan["cost_steps"] and cost_args.gpus == [1, 2, 8] and not cost_args.tiny
    assert cost_args.out == gpu_stages.stage_folder(out, "pretrain_cost") and not cost_args.set
    for stage in ("figure2_infer", "figure2_train", "paper", "long"):
        argv = args_of(stage)
        assert argv[1:3] == ["-m", "benchmarks.efficiency"]
        args = efficiency.parse_args(argv[3:])  # the script's own parser accepts them (models, options)
        assert args.device == "cuda" and args.out == gpu_stages.stage_folder(out, stage)
        assert {"pom_fused", "summarymixing"} <= set(args.mixers)
        if stage == "long":
            assert args.batch == 1 and args.mode == "infer" and max(args.seconds) == 1200 and min(args.seconds) >= 300
        else:
            assert args.batch == 6 and args.seconds == plan["figure_seconds"] and max(args.seconds) == 80
            assert "relposmhaxl" in args.mixers
    assert efficiency.parse_args(args_of("figure2_infer")[3:]).mode == "infer"
    figure_train = efficiency.parse_args(args_of("figure2_train")[3:])
    assert figure_train.mode == "train" and figure_train.dtype == "bf16" and not figure_train.grad
    paper = efficiency.parse_args(args_of("paper")[3:])
    assert paper.mode == "infer" and paper.grad and paper.dtype == "fp16"
    floor = args_of("floor")
    assert floor[1:3] == ["-m", "benchmarks.floor"]
    assert floor[floor.index("--dtype") + 1] == "bf16" and floor[floor.index("--device") + 1] == "cuda"


def test_recipe_command_lines_pass_the_recipes_checks(tmp_path):
    """The training stage's overrides are accepted by each recipe's own check
    (as on a GPU machine: --device=cuda, fp16 allowed)."""
    commands = dict(gpu_stages.training_commands(str(tmp_path)))
    os.makedirs(tmp_path / "work" / "corpus" / "LibriSpeech")  # the corpus folder the check looks for
    for name, script, hparams in (
        ("pretrain_2", gpu_stages.PRETRAIN_SCRIPT, "pretrain/pom.yaml"),
        ("finetune_2", gpu_stages.FINETUNE_SCRIPT, "finetune/pom.yaml"),
    ):
        argv = commands[name]
        loaded, problems = recipe_check(script, hparams, argv[3:])
        assert problems == [], (name, problems)
        assert loaded["d_model"] == gpu_stages.TRAIN_MODEL["d_model"]
        assert loaded["num_layers"] == gpu_stages.TRAIN_MODEL["num_layers"]
        assert loaded["mixer_options"] == {"degree": 2, "expansion": 2, "implementation": "fused"}
    assert loaded["precision"] == "fp16" and loaded["test_splits"] == ["test-clean"]
    assert loaded["train_splits"] == ["train-clean-100", "train-clean-360", "train-other-500"]


def test_the_training_stage_trains_through_the_fused_pom(synthetic_librispeech, tmp_path, monkeypatch):
    """The stage's first pre-training and fine-tuning commands at tiny sizes on the CPU
    (where the fused op takes its chunked path, the same function): both recipes run
    with implementation fused, and the stage's reader and target see it."""
    tiny = {"d_model": 32, "num_layers": 1, "d_ffn": 64, "kernel_size": 7, "cnn_channels": "(8,8)"}
    tiny["cnn_output_size"] = 160
    pretrain = {"precision": "fp32", "num_workers": 0, "max_batch_len": 40, "global_batch_seconds": 40}
    pretrain.update(cb_vocab=64, train_num_buckets=4, log_interval=2)
    finetune = {"precision": "fp32", "num_workers": 0, "dnn_neurons": 32, "train_splits": "[train-clean-100]"}
    changes = {"pretrain": pretrain, "finetune": finetune}
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a shared 2-core machine: more threads only oversubscribe it
    corpus = os.path.dirname(synthetic_librispeech)
    commands = dict(
        gpu_stages.training_commands(str(tmp_path), True, device="cpu", model=tiny, changes=changes, corpus=corpus)
    )
    assert commands["corpus"][commands["corpus"].index("--out") + 1] == corpus
    log = str(tmp_path / "logs" / "train.log")
    for name, extra in (("pretrain_1", "--optimizer_step_limit=4"), ("finetune_1", "--number_of_epochs=1")):
        last = {arg.split("=", 1)[0]: arg for arg in commands[name][3:] + [extra]}  # a repeated option: the last
        argv = commands[name][:3] + list(last.values())
        assert gpu_stages.run_command(name, argv, log, time.monotonic() + 600) is None, open(log).read()[-3000:]
    data = gpu_stages.read_training(str(tmp_path), True, log)
    assert data["fused"] == {"pretrain": "fused", "finetune": "fused", "fallback_warnings": 0}
    assert data["pretrain"]["checkpoint_steps"][-1] == 4 and len(data["finetune"]["epochs"]) == 1
    (target,) = gpu_reports.judge_fused_training(data["fused"])
    assert target["status"] == "PASS" and target["measured"] == (
        "pre-training: fused, fine-tuning: fused; fallback warnings: 0"
    )
    with open(log, "a") as f:
        f.write(
            "UserWarning: implementation='fused' needs Triton (pip install triton); using the chunked PyTorch path\n"
        )
    assert gpu_stages.read_training(str(tmp_path), True, log)["fused"]["fallback_warnings"] == 1
    assert gpu_reports.judge_fused_training(dict(data["fused"], fallback_warnings=1))[0]["status"] == "FAIL"
    assert gpu_reports.judge_fused_training(dict(data["fused"], pretrain="plain"))[0]["status"] == "FAIL"
    assert gpu_reports.judge_fused_training(None)[0]["measured"].startswith("pre-training: not run")


# --------------------------------------------------------------------------- log parsers
def test_training_logs_are_read_as_speechbrain_writes_them(tmp_path):
    from speechbrain.utils.train_logger import FileTrainLogger

    work = tmp_path / "work"
    pretrain, finetune = work / "pretrain", work / "finetune"
    os.makedirs(pretrain / "save")
    os.makedirs(finetune)
    steps = FileTrainLogger(str(pretrain / "train_steps_log.txt"))
    steps.log_stats(stats_meta={"start_step": 0, "start_epoch": 1, "start_batch": 0})
    for step, loss in ((10, 5.5), (20, 5.0), (30, float("nan"))):
        steps.log_stats(stats_meta={"steps": step, "lr": 1e-3, "loss": loss, "masked_acc": 0.0123, "skipped_steps": 0})
    steps.log_stats(stats_meta={"start_step": 30, "start_epoch": 3, "start_batch": 0})
    # the recipe's older lines, read the same way
    steps.log_stats(stats_meta={"event": "started from scratch"})
    steps.log_stats(stats_meta={"event": "resumed from checkpoint: optimizer step 30; epoch 3 after 4 batches"})
    for i, (unixtime, step) in enumerate(((2.0, 300), (1.0, 200))):
        ckpt = pretrain / "save" / f"CKPT+{i}"
        os.makedirs(ckpt)
        (ckpt / "CKPT.yaml").write_text(yaml.safe_dump({"unixtime": unixtime, "end-of-epoch": True}))
        (ckpt / "brain.ckpt").write_text(yaml.safe_dump({"step": 5, "optimizer_step": step, "avg_train_loss": 1.0}))
    os.makedirs(pretrain / "save" / "CKPT+incomplete")  # being written: no CKPT.yaml
    (pretrain / "log.txt").write_text("WARNING Non-finite gradients: optimizer step 3 skipped.\nINFO fine\n")

    log = FileTrainLogger(str(finetune / "train_log.txt"))
    for epoch, train_loss in ((1, 250.0), (2, float("inf"))):
        log.log_stats(
            stats_meta={"epoch": epoch, "lr": 0.003, "lr_encoder": 0.001, "minutes": 0.3},
            train_stats={"loss": train_loss},
            valid_stats={"loss": 12.5, "CER": 98.5, "WER": 100.0},
        )
    log.log_stats(stats_meta={"split": "test-clean", "epoch loaded": 2}, test_stats={"loss": 1.0, "CER": 1, "WER": 2})

    data = gpu_stages.read_training(str(tmp_path), quick=True)
    pre = data["pretrain"]
    assert pre["limits"] == [100, 150] and pre["checkpoint_steps"] == [200, 300] and pre["nonfinite_warnings"] == 1
    starts = [(r["start_step"], r["start_epoch"], r["start_batch"]) for r in pre["log"] if "start_step" in r]
    assert starts == [(0, 1, 0), (30, 3, 0), (0, 1, 0), (30, 3, 4)]
    rows = [r for r in pre["log"] if "steps" in r]
    assert [r["steps"] for r in rows] == [10, 20, 30] and rows[0]["loss"] == 5.5 and math.isnan(rows[2]["loss"])
    assert rows[0]["masked_acc"] == pytest.approx(0.0123, rel=0.01) and rows[0]["skipped_steps"] == 0
    epochs = data["finetune"]["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2]  # the test line is not an epoch
    assert epochs[0] == {"epoch": 1, "train_loss": 250.0, "valid_loss": 12.5, "valid_CER": 98.5, "valid_WER": 100.0}
    assert math.isinf(epochs[1]["train_loss"])
    assert data["finetune"]["epochs_planned"] == [1, 2] and data["finetune"]["nonfinite_warnings"] == 0
    assert gpu_stages.read_training(str(tmp_path / "nothing"))["pretrain"]["log"] == []


# --------------------------------------------------------------------------- judging: check
def check_rows(error=1e-6, bf16_error=5e-3):
    rows = []
    for implementation in ("chunked", "fused"):
        for level in ("mixer", "encoder"):
            for dtype, tol, err in (("float32", 1e-4, error), ("bfloat16", 3e-2, bf16_error)):
                rows.append(
                    dict(implementation=implementation, level=level, dtype=dtype, out=err, grad_input=err,
                         grad_params=err, tol=tol, ok=err < tol)
                )  # fmt: skip
    return rows


def test_judge_check():
    found = by_id(T.judge_check(check_rows()))
    assert sorted(found) == ["check_chunked_bf16", "check_chunked_fp32", "check_fused_bf16", "check_fused_fp32"]
    assert all(t["status"] == "PASS" for t in found.values())
    assert "mixer: output 1.0e-06" in found["check_fused_fp32"]["measured"]

    rows = check_rows()

    def pick(implementation, dtype, level):
        return next(r for r in rows if (r["implementation"], r["dtype"], r["level"]) == (implementation, dtype, level))

    pick("fused", "bfloat16", "encoder")["grad_params"] = 0.2  # the fused kernels' gradients off in bf16
    pick("fused", "float32", "mixer")["out"] = float("nan")
    rows.remove(pick("chunked", "float32", "mixer"))
    found = by_id(T.judge_check(rows))
    assert found["check_fused_bf16"]["status"] == "FAIL" and "ABOVE" in found["check_fused_bf16"]["measured"]
    assert found["check_chunked_fp32"]["status"] == "FAIL"
    assert "mixer: not measured" in found["check_chunked_fp32"]["measured"]
    assert found["check_fused_fp32"]["status"] == "FAIL"  # nan
    assert found["check_chunked_bf16"]["status"] == "PASS"
    assert all(t["status"] == "FAIL" and "not measured" in t["measured"] for t in T.judge_check(None))

    # equal numbers, but the fused PoM took its chunked fallback (Triton never ran): the fused targets fail
    fallback = by_id(T.judge_check(check_rows(), fused_kernel_calls=0))
    assert fallback["check_fused_fp32"]["status"] == fallback["check_fused_bf16"]["status"] == "FAIL"
    assert fallback["check_fused_fp32"]["measured"].endswith("Triton kernels ran 0 times (FAIL)")
    assert fallback["check_chunked_fp32"]["status"] == "PASS"
    ran = by_id(T.judge_check(check_rows(), fused_kernel_calls=8))
    assert (
        ran["check_fused_bf16"]["status"] == "PASS"
        and "Triton kernels ran 8 times" in ran["check_fused_bf16"]["measured"]
    )


# --------------------------------------------------------------------------- judging: training
def pretrain_run(losses=(5.5, 5.0, 4.5, 4.2), skipped=0, resumed_at=200, limits=(200, 300), ckpts=(290, 300)):
    log = [{"start_step": 0, "start_epoch": 1, "start_batch": 0}]
    steps = [100, 200, 250, 300][: len(losses)]
    for i, (step, loss) in enumerate(zip(steps, losses)):
        if i == 2 and resumed_at is not None:
            log.append({"start_step": resumed_at, "start_epoch": 9, "start_batch": 0})
        log.append({"steps": step, "loss": loss, "masked_acc": 0.01 * (i + 1), "skipped_steps": skipped})
    return {"limits": list(limits), "log": log, "checkpoint_steps": list(ckpts), "nonfinite_warnings": 0}


def finetune_run(train=(300.0, 3.1, 2.9), valid=(3.5, 3.0, 2.8), epochs=(1, 2, 3), planned=(1, 3), warnings=0):
    rows = [
        {"epoch": e, "train_loss": t, "valid_loss": v, "valid_CER": 90.0, "valid_WER": 100.0}
        for e, t, v in zip(epochs, train, valid)
    ]
    return {"epochs_planned": list(planned), "epochs": rows, "nonfinite_warnings": warnings}


def test_judge_training_passes():
    found = by_id(T.judge_pretraining(pretrain_run()) + T.judge_finetuning(finetune_run()))
    assert [t["status"] for t in found.values()] == ["PASS"] * 6, found
    assert found["pretrain_loss_falls"]["measured"].startswith("loss 5.500 at step 100 -> 4.200 at step 300")
    assert found["pretrain_resume"]["measured"] == (
        "run 1 (limit 200) then run 2 (limit 300) started at: step 0 (epoch 1, batch 0), step 200 (epoch 9, "
        "batch 0) (expected steps 0, 200); last logged step 300; last checkpoint at step 300"
    )
    assert found["finetune_resume"]["measured"].endswith("epochs logged [1, 2, 3]")


@pytest.mark.parametrize(
    "run,failing",
    [
        (pretrain_run(losses=(5.5, 5.4, 5.3, 5.2)), {"pretrain_loss_falls"}),  # falls, but by less than 10 %
        (pretrain_run(losses=(5.5, float("nan"), 4.5, 4.2)), {"pretrain_finite"}),
        (pretrain_run(skipped=2), {"pretrain_finite"}),
        (pretrain_run(resumed_at=0), {"pretrain_resume"}),  # the second run started from scratch
        (pretrain_run(resumed_at=150), {"pretrain_resume"}),  # not from the first run's last step
        (pretrain_run(resumed_at=None), {"pretrain_resume"}),  # one run only
        (pretrain_run(ckpts=(200,)), {"pretrain_resume"}),  # no checkpoint at the second limit
        (pretrain_run(losses=(5.5, 4.0)), {"pretrain_resume"}),  # stopped before the second limit
        (None, {"pretrain_loss_falls", "pretrain_finite", "pretrain_resume"}),
    ],
)
def test_judge_pretraining_fails(run, failing):
    found = T.judge_pretraining(run)
    assert {t["id"] for t in found if t["status"] == "FAIL"} == failing, found


@pytest.mark.parametrize(
    "run,failing",
    [
        (finetune_run(train=(300.0, 290.0, 280.0)), {"finetune_loss_falls"}),
        (finetune_run(valid=(3.5, float("nan"), 2.8)), {"finetune_finite"}),
        (finetune_run(warnings=1), {"finetune_finite"}),
        (finetune_run(epochs=(1, 1, 2), planned=(1, 2)), {"finetune_resume"}),  # epoch 1 trained again: no resume
        (finetune_run(train=(300.0,), valid=(3.5,), epochs=(1,)), {"finetune_loss_falls", "finetune_resume"}),
        ({"epochs_planned": [1, 3], "epochs": []}, {"finetune_loss_falls", "finetune_finite", "finetune_resume"}),
    ],
)
def test_judge_finetuning_fails(run, failing):
    found = T.judge_finetuning(run)
    assert {t["id"] for t in found if t["status"] == "FAIL"} == failing, found


# --------------------------------------------------------------------------- judging: efficiency
#: (time ms, memory MiB) per mixer and length, shaped like the reference H100 figures
FIGURE = {
    "relposmhaxl": {20: (10, 1500), 40: (26, 3000), 80: (77, 11500)},
    "summarymixing": {20: (15, 200), 40: (16, 280), 80: (18, 370)},
    "pom_fused": {20: (14, 150), 40: (15, 250), 80: (18.5, 350)},
    "pom": {20: (16, 200), 40: (22, 320), 80: (20, 530)},
}


def figure_rows(mode="infer", changes=None, status=None):
    rows = []
    for mixer, cells in FIGURE.items():
        for seconds, (time_ms, memory) in cells.items():
            time_ms, memory = (changes or {}).get((mixer, seconds), (time_ms, memory))
            row = dict(mixer=mixer, mode=mode, grad=0, seconds=seconds, frames=seconds * 25, batch=6, dtype="bf16",
                       device="cuda", status="ok", time_ms=time_ms, memory_MiB=memory)  # fmt: skip
            if status and (mixer, seconds) in status:
                row.update(status=status[(mixer, seconds)], time_ms=math.nan, memory_MiB=math.nan)
            rows.append(row)
    return rows


def judge_figure(rows, mode="infer", factor=20):
    return by_id(
        T.judge_pom_vs_summarymixing(rows, mode, "label", [10, 20, 40, 80], "pom_fused", "figure2_infer")
        + T.judge_memory_ratio(rows, mode, "label", factor, "pom_fused", "figure2_infer")
    )


def test_judge_figure2_passes_through_the_csv(tmp_path):
    """Rows written and read back by efficiency.py's own CSV functions (10 s is before the "from 20 s")."""
    rows = figure_rows()
    rows += [dict(rows[0], seconds=10, mixer="pom_fused", time_ms=99.0, memory_MiB=9999.0)]
    efficiency.write_csv(rows, tmp_path / "efficiency.csv")
    found = judge_figure(efficiency.read_csv(tmp_path / "efficiency.csv"))
    assert [t["status"] for t in found.values()] == ["PASS"] * 3, found
    time = found["figure2_infer_pom_vs_summarymixing_time"]
    assert time["measured"] == "20 s: 14.0 vs 15.0 ms; 40 s: 15.0 vs 16.0 ms; 80 s: 18.5 vs 18.0 ms"  # within 5 %
    assert found["figure2_infer_memory_vs_relposmhaxl"]["measured"] == (
        "relposmhaxl 11500 MiB / pom_fused 350 MiB = 32.9x"
    )


def test_judge_figure2_fails():
    slower = judge_figure(figure_rows(changes={("pom_fused", 40): (17.0, 250)}))  # 6 % slower at 40 s
    assert slower["figure2_infer_pom_vs_summarymixing_time"]["status"] == "FAIL"
    assert "40 s: 17.0 vs 16.0 ms (FAIL)" in slower["figure2_infer_pom_vs_summarymixing_time"]["measured"]
    assert slower["figure2_infer_pom_vs_summarymixing_memory"]["status"] == "PASS"

    heavier = judge_figure(figure_rows(changes={("pom_fused", 80): (18.0, 371)}))
    assert heavier["figure2_infer_pom_vs_summarymixing_memory"]["status"] == "FAIL"
    assert heavier["figure2_infer_memory_vs_relposmhaxl"]["status"] == "PASS"  # 31x

    ratio = judge_figure(figure_rows(mode="train"), mode="train", factor=40)
    assert ratio["figure2_infer_memory_vs_relposmhaxl"]["status"] == "FAIL"

    oom = judge_figure(figure_rows(status={("pom_fused", 80): "oom"}))
    assert oom["figure2_infer_pom_vs_summarymixing_time"]["status"] == "FAIL"
    assert "80 s: pom_fused oom" in oom["figure2_infer_pom_vs_summarymixing_time"]["measured"]
    assert oom["figure2_infer_memory_vs_relposmhaxl"]["status"] == "FAIL"

    # the stage was killed before 80 s was measured: the expected length is missing
    cut = judge_figure([r for r in figure_rows() if r["seconds"] < 80])
    assert cut["figure2_infer_pom_vs_summarymixing_time"]["status"] == "FAIL"
    assert "80 s: pom_fused not measured" in cut["figure2_infer_pom_vs_summarymixing_time"]["measured"]

    # SummaryMixing or RelPosMHAXL out of memory where PoM ran: PoM is the lighter
    theirs = judge_figure(figure_rows(status={("summarymixing", 80): "oom", ("relposmhaxl", 80): "oom"}))
    assert [t["status"] for t in theirs.values()] == ["PASS"] * 3
    errored = judge_figure(figure_rows(status={("summarymixing", 40): "error: RuntimeError: boom"}))
    assert errored["figure2_infer_pom_vs_summarymixing_time"]["status"] == "FAIL"
    assert [t["status"] for t in judge_figure([]).values()] == ["FAIL"] * 3


def long_rows(pom_status="ok"):
    rows = []
    for mixer, cells in (("pom_fused", (21, 570, 42, 860)), ("mha", (305, 27000, None, None))):
        for seconds, time_ms, memory in ((600, cells[0], cells[1]), (1200, cells[2], cells[3])):
            status = "ok" if time_ms is not None else "oom"
            rows.append(dict(mixer=mixer, mode="infer", seconds=seconds, batch=1, status=status,
                             time_ms=time_ms or math.nan, memory_MiB=memory or math.nan))  # fmt: skip
    if pom_status != "ok":
        rows[1].update(status=pom_status, time_ms=math.nan, memory_MiB=math.nan)
    return rows


def test_judge_long():
    (passed,) = T.judge_long(long_rows(), "pom_fused")
    assert passed["status"] == "PASS" and passed["id"] == "long_1200s"
    assert passed["measured"] == "pom_fused 1200 s, batch 1: 42 ms, 860 MiB; mha: oom"
    (oom,) = T.judge_long(long_rows("oom"), "pom_fused")
    assert oom["status"] == "FAIL" and oom["measured"].startswith("pom_fused 1200 s, batch 1: oom")
    (missing,) = T.judge_long([r for r in long_rows() if r["seconds"] == 600], "pom_fused")
    assert missing["status"] == "FAIL" and "not measured" in missing["measured"]


def floor_rows(fused=(0.21, 0.60), plain=(0.35, 1.40), floor=(0.16, 0.45)):
    rows = []
    for i, mode in enumerate(("infer", "train")):
        for implementation, times in (("plain", plain), ("chunked", (0.40, 1.9)), ("fused", fused)):
            rows.append(dict(mode=mode, implementation=implementation, time_ms=times[i], floor_ms=floor[i],
                             x_floor=times[i] / floor[i], saved_MiB=math.nan))  # fmt: skip
    return rows


def test_judge_floor():
    found = by_id(T.judge_floor(floor_rows(), "pom_fused"))
    assert [t["status"] for t in found.values()] == ["PASS"] * 3
    assert found["floor_infer"]["measured"] == (
        "fused 0.210 ms = 1.31x its floor 0.160 ms (plain 2.19x, chunked 2.50x)"
    )
    assert found["fused_faster_than_plain"]["measured"] == (
        "infer: fused 0.210 ms vs plain 0.350 ms; train: fused 0.600 ms vs plain 1.400 ms"
    )
    slow = by_id(T.judge_floor(floor_rows(fused=(0.21, 1.5)), "pom_fused"))
    assert slow["floor_infer"]["status"] == "PASS"
    assert slow["floor_train"]["status"] == "FAIL"  # 3.3x its floor
    assert slow["fused_faster_than_plain"]["status"] == "FAIL"  # 1.5 ms vs 1.4 ms in training
    plain = by_id(T.judge_floor(floor_rows(), "pom"))  # judging the plain implementation instead
    assert plain["floor_train"]["status"] == "FAIL" and plain["floor_train"]["measured"].startswith("plain 1.400 ms")
    assert [t["status"] for t in T.judge_floor(None, "pom_fused")] == ["FAIL"] * 3


def cost_data(status=None):
    """pretrain_cost.json as the stage writes it: H100-like rows for the three experiments."""
    rows = []
    for name, step in (("pom", 0.25), ("relposmhaxl", 0.40), ("summarymixing", 0.22)):
        for case, size, utterance in (("typical", 1400.0, 12.3), ("typical", 700.0, 12.3), ("longest", 1400.0, 35.0)):
            row = dict(experiment=name, case=case, per_device_s=size, utterances=int(size // utterance))
            row.update(utterance_s=utterance, precision="fp16", params_M=95.6, status="ok", losses_finite=True)
            row.update(step_s=step * size / 1400, step_s_min=step * size / 1400, peak_GiB=20.0 * size / 1400)
            if status and (name, case, size) in status:
                row.update(status=status[(name, case, size)], step_s=math.nan, peak_GiB=math.nan, losses_finite=None)
            rows.append(row)
    return {"rows": rows, "experiments": {}}


def test_judges_of_every_stage_fail_on_nothing_measured(tmp_path):
    judges = gpu_check.judges(gpu_check.Context(str(tmp_path)))
    assert list(judges) == gpu_stages.STAGE_NAMES
    for stage, judge in judges.items():
        found = judge(None)
        assert found and all(t["status"] == "FAIL" and t["stage"] == stage for t in found), stage
    ids = [t["id"] for judge in judges.values() for t in judge(None)]
    assert len(ids) == len(set(ids)) == 4 + 7 + 3 + 3 + 3 + 2 + 1 + 3


# --------------------------------------------------------------------------- stage loop and summary
class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_failing_stages_are_recorded_and_the_next_ones_run(tmp_path):
    ctx = gpu_check.Context(str(tmp_path))
    clock, ran = FakeClock(), []

    def ok(rows):
        def run(ctx, deadline):
            ran.append(deadline)
            clock.now += 10
            return rows, None

        return run

    def crash(ctx, deadline):
        ran.append(deadline)
        clock.now += 5
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    def killed(ctx, deadline):  # over its budget: killed, with what it had measured
        ran.append(deadline)
        clock.now = deadline
        return long_rows(), "efficiency: over the stage's budget, killed after 45 s"

    run = {
        "check": ok({"rows": check_rows(), "fused_kernel_calls": 8}),
        "train": crash,
        "pretrain_cost": ok(cost_data()),
        "figure2_infer": ok(figure_rows()),
        "figure2_train": ok(figure_rows("train", changes={("relposmhaxl", 80): (200, 900)})),  # 2.6x: FAIL
        "paper": ok(figure_rows()),
        "long": killed,
        "floor": ok(floor_rows()),
    }
    records, found = gpu_check.run_stages(ctx, gpu_stages.STAGE_NAMES, run=run, clock=clock)
    assert len(ran) == 8 and [r["name"] for r in records] == gpu_stages.STAGE_NAMES
    status = {r["name"]: r["status"] for r in records}
    assert status == {**dict.fromkeys(gpu_stages.STAGE_NAMES, "ok"), "train": "FAIL", "long": "FAIL"}
    train = next(r for r in records if r["name"] == "train")
    assert train["error"] == "RuntimeError: CUDA error: an illegal memory access was encountered"
    assert ran[2] == 15 + gpu_stages.STAGES[2].budget_s  # each stage's deadline: its start + its budget
    results = by_id(found)
    assert all(results[i]["status"] == "FAIL" for i in ("pretrain_loss_falls", "finetune_resume"))
    assert results["long_1200s"]["status"] == "PASS"  # measured before the kill
    assert results["figure2_train_memory_vs_relposmhaxl"]["status"] == "FAIL"
    assert results["check_fused_bf16"]["status"] == results["floor_train"]["status"] == "PASS"
    assert results["pretrain_cost_pom"]["status"] == "PASS" and results["train_fused"]["status"] == "FAIL"
    assert not gpu_reports.passed(records, found)


def test_total_budget_skips_what_does_not_fit(tmp_path):
    ctx = gpu_check.Context(str(tmp_path), quick=True)
    clock, deadlines = FakeClock(), []

    def slow(ctx, deadline):
        deadlines.append(deadline)
        clock.now = deadline  # every stage uses all of its budget
        return None, None

    run = dict.fromkeys(gpu_stages.STAGE_NAMES, slow)
    records, _ = gpu_check.run_stages(ctx, gpu_stages.STAGE_NAMES, run=run, clock=clock, total_budget=120)
    assert deadlines == [25, 100, 120]  # quick budgets 25, 75, then cut at the total
    assert [r["error"] for r in records[3:]] == ["not run: no time left in the total budget"] * 5


def test_budgets_fit_the_loan():
    """8 minutes for the whole make gpu-check (4 with --quick), preflight and bundle install
    included: the stages' budgets leave a minute for them; every stage's budget covers its
    expected time with room to spare."""
    full = sum(s.budget_s for s in gpu_check.STAGES)
    quick = sum(s.quick_budget_s for s in gpu_check.STAGES)
    assert gpu_check.TOTAL_BUDGET_S == full <= 8 * 60 - 60 and gpu_check.QUICK_TOTAL_BUDGET_S == quick <= 4 * 60 - 40
    for s in gpu_check.STAGES:
        assert s.expected_s * 1.2 <= s.budget_s and s.quick_expected_s * 1.2 <= s.quick_budget_s, s
    expected = sum(s.expected_s for s in gpu_check.STAGES)
    assert expected <= 6 * 60 and sum(s.quick_expected_s for s in gpu_check.STAGES) <= 3 * 60


def test_summary_files(tmp_path):
    env = {"device": "NVIDIA H100 80GB HBM3", "capability": "sm_90", "memory_GiB": 79.1, "date": "2026-11-25",
           "torch": "2.11.0", "cuda": "13.0", "speechbrain": "1.1.2", "quick": False, "wall_s": 512.0,
           "command": "python benchmarks/gpu_check.py"}  # fmt: skip
    records = [
        {"name": "check", "budget_s": 60, "wall_s": 20.0, "status": "ok", "error": None, "folder": "check",
         "log": "logs/check.log"},
        {"name": "long", "budget_s": 45, "wall_s": 45.0, "status": "FAIL", "error": "long: over the stage's budget",
         "folder": "long", "log": "logs/long.log"},
    ]  # fmt: skip
    found = T.judge_check(check_rows()) + T.judge_long(long_rows("oom"), "pom_fused")
    assert gpu_reports.write_summary(str(tmp_path), env, records, found) is False
    data = json.loads((tmp_path / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert data["passed"] is False and data["complete"] is True and data["failed"] == ["long_1200s"]
    assert data["env"]["device"] == "NVIDIA H100 80GB HBM3" and len(data["targets"]) == 5
    assert data["stages"][1]["error"] == "long: over the stage's budget"
    text = (tmp_path / "summary.md").read_text()
    assert text.startswith("# GPU check: FAIL (4 of 5 targets passed, 1 stage(s) failed)")
    assert "| fused PoM = plain PoM on CUDA, bf16: outputs and gradients (mixer, encoder) | check | PASS |" in text
    assert "| check | 60 | 20 | ok | check/ | logs/check.log |" in text
    assert "| long | 45 | 45 | FAIL: long: over the stage's budget | long/ | logs/long.log |" in text

    # every target passed and every stage finished: PASS; non-finite numbers stay strict JSON
    records[1].update(status="ok", error=None)
    found = T.judge_check(check_rows()) + [T.target("x", "long", "claim", True, "a | b")]
    found[0]["details"] = {"ratio": float("inf")}
    assert gpu_reports.write_summary(str(tmp_path), env, records, found) is True
    data = json.loads((tmp_path / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert data["passed"] is True and data["failed"] == [] and data["targets"][0]["details"]["ratio"] == "inf"
    text = (tmp_path / "summary.md").read_text()
    assert text.startswith("# GPU check: PASS (5 of 5 targets passed)") and "| a / b |" in text
    assert not gpu_reports.passed([], [])


def test_main_with_a_faked_gpu(tmp_path, monkeypatch, capsys):
    """The whole command with the device and the stages faked: the default folder named after
    the GPU, summary.md / summary.json / commands.json, exit status 1 when a target fails."""
    monkeypatch.setattr(gpu_check, "cuda_available", lambda: True)
    monkeypatch.setattr(gpu_check, "device_info", lambda: {"device": "NVIDIA H100 80GB HBM3", "torch": "2.11"})
    monkeypatch.setattr(gpu_check, "RUNS", str(tmp_path / "runs"))
    outcome = {"long": long_rows()}

    def runners():
        return {name: (lambda ctx, deadline, name=name: (outcome.get(name), None)) for name in gpu_stages.STAGE_NAMES}

    monkeypatch.setattr(gpu_check, "runners", runners)
    assert gpu_check.main(["--stages", "long"]) == 0
    out = tmp_path / "runs" / "nvidia-h100-80gb-hbm3"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] and [t["id"] for t in summary["targets"]] == ["long_1200s"]
    assert list(json.loads((out / "commands.json").read_text())) == ["long"]
    assert "[gpu-check] PASS" in capsys.readouterr().out

    outcome["long"] = long_rows("oom")
    assert gpu_check.main(["--stages", "long", "floor", "--quick", "--out", str(tmp_path / "o")]) == 1
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert [s["name"] for s in summary["stages"]] == ["long", "floor"] and summary["env"]["quick"] is True
    assert "long_1200s" in summary["failed"] and "fused_faster_than_plain" in summary["failed"]


def test_run_command_records_failures_and_kills_what_overruns(tmp_path):
    import time

    log = str(tmp_path / "logs" / "stage.log")
    fail = [sys.executable, "-c", "import sys; print('working'); sys.exit('Error: data_folder does not exist')"]
    assert gpu_stages.run_command("pretrain_1", fail, log, time.monotonic() + 120) == (
        "pretrain_1: exit status 1: Error: data_folder does not exist"
    )
    sleeper = [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(120)"]
    problem = gpu_stages.run_command("long", sleeper, log, time.monotonic() + 3)
    assert problem.startswith("long: over the stage's budget, killed after")
    assert gpu_stages.run_command("floor", sleeper, log, time.monotonic()) == (
        "floor: not started, no time left in the stage's budget"
    )
    text = open(log).read()
    assert "working" in text and "started" in text and text.count("$ ") == 2
    assert gpu_stages.run_command("ok", [sys.executable, "-c", "pass"], log, time.monotonic() + 120) is None


def test_figure2_rows_are_merged(tmp_path):
    """figure2/infer and figure2/train (one efficiency.py run each) together in figure2/efficiency.*."""
    for mode in ("infer", "train"):
        os.makedirs(tmp_path / "figure2" / mode)
        efficiency.write_csv(figure_rows(mode), tmp_path / "figure2" / mode / "efficiency.csv")
    gpu_check.merge_figure2(str(tmp_path))
    rows = efficiency.read_csv(tmp_path / "figure2" / "efficiency.csv")
    assert [r["mode"] for r in rows] == ["infer"] * 12 + ["train"] * 12
    text = (tmp_path / "figure2" / "efficiency.md").read_text()
    assert "| infer | 20 s | 40 s | 80 s |" in text and "| train | 20 s | 40 s | 80 s |" in text
    assert (tmp_path / "figure2" / "efficiency.png").stat().st_size > 0
