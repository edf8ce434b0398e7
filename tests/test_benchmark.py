"""Smoke tests of the benchmark scripts (benchmarks/*.py) on the CPU at tiny sizes.

Every benchmark model builds from its experiment file, the efficiency run records
time and memory (never asserted) and writes CSV, PNG and Markdown, the
equivalence check passes, and the floor's computations hold.
"""

import doctest
import math
import os
import sys

import pytest
import torch

from benchmarks import check, common, efficiency, floor
from pom.parameters import count_parameters
from pom.precision import set_tf32_flags, tf32_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def keep_threads():
    """The scripts set torch's CPU threads; give the test session its own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_common_doctests():
    assert doctest.testmod(common).failed == 0


@pytest.mark.parametrize("name", common.model_names())
def test_every_benchmark_model_builds_from_its_experiment_file(name):
    model, hparams = common.build_model(name, layers=1, chunk_size=8)
    assert hparams["num_layers"] == 1 and len(model.encoder.encoder.layers) == 1
    with torch.no_grad():
        out = model.eval()(torch.randn(2, 40, common.N_MELS), torch.tensor([1.0, 0.5]))
    assert out.shape == (2, 10, hparams["d_model"])
    assert torch.isfinite(out).all()


def test_the_pretraining_experiments_are_benchmark_models():
    names = common.model_names()
    assert {"relposmhaxl", "ropemha", "mha", "summarymixing", "pom", "mamba", "pom_large", "relposmhaxl_large"} <= set(
        names
    )
    assert "base" not in names and set(efficiency.DEFAULT_MIXERS) <= set(names)
    with pytest.raises(ValueError, match="unknown model 'no_such_model'; known: .*pom_chunked"):
        common.build_model("no_such_model")


def test_variants_are_overrides_of_the_experiment_files():
    pom, pom_hp = common.build_model("pom", device="meta")
    chunked, chunked_hp = common.build_model("pom_chunked", chunk_size=256, device="meta")
    assert next(pom.parameters()).is_meta and pom_hp["num_layers"] == 12
    assert chunked_hp["mixer_options"] == {**pom_hp["mixer_options"], "implementation": "chunked", "chunk_size": 256}
    assert count_parameters(chunked) == count_parameters(pom)  # same weights, another implementation
    _, k3 = common.build_model("pom_k3", device="meta")
    assert (k3["d_model"], k3["mixer_options"]["degree"], k3["mixer_options"]["expansion"]) == (432, 3, 2)
    assert common.describe("pom_fused", layers=1) == (
        "hparams/pretrain/pom.yaml + {'mixer_options': {'implementation': 'fused'}, 'num_layers': 1}"
    )


def config(**options):
    cfg = dict(
        mixer="pom_chunked",
        mode="train",
        seconds=1,
        batch=1,
        dtype="fp32",
        device="cpu",
        grad=False,
        repeats=1,
        warmup=0,
        layers=1,
        chunk_size=8,
        cuda_graphs=False,
        compile=False,
        threads=1,
    )
    cfg.update(options)
    return cfg


@pytest.mark.parametrize("mode", ["infer", "train"])
def test_run_config_records_time_and_memory(mode, keep_threads):
    row = efficiency.run_config(config(mode=mode))
    assert row["status"] == "ok", row["status"]
    assert row["time_ms"] > 0 and row["memory_MiB"] >= 0 and not math.isnan(row["params_M"])
    assert row["source"].startswith("hparams/pretrain/pom.yaml + ") and "'implementation': 'chunked'" in row["source"]


def test_one_model_per_mixer_at_every_length(monkeypatch, keep_threads):
    """On a GPU, efficiency.py builds each model once and measures it at every length."""
    builds = []
    build_model = common.build_model

    def counted(*args, **kwargs):
        builds.append(args[0])
        return build_model(*args, **kwargs)

    monkeypatch.setattr(common, "build_model", counted)
    seen = []
    rows = efficiency.run_lengths(config(mode="train"), [1, 2], on_row=seen.append)
    assert builds == ["pom_chunked"] and seen == rows
    assert [(r["seconds"], r["frames"], r["status"]) for r in rows] == [(1, 25, "ok"), (2, 50, "ok")]
    assert all(r["time_ms"] > 0 and r["params_M"] == rows[0]["params_M"] for r in rows)
    broken = efficiency.run_lengths(config(mixer="no_such_model"), [1, 2, 4])
    assert [r["seconds"] for r in broken] == [1, 2, 4] and len(builds) == 1
    assert all(r["status"].startswith("error: ValueError: unknown model") for r in broken)


def test_failures_are_recorded_not_raised():
    row = efficiency.run_config(config(mixer="no_such_model"))
    assert row["status"].startswith("error: ValueError") and math.isnan(row["time_ms"])
    assert common.is_oom(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert common.is_oom(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 GB"))
    assert not common.is_oom(ValueError("shapes do not match"))


def test_outputs_csv_table_and_plot(tmp_path):
    rows = [
        dict(mixer="pom", mode="infer", grad=0, seconds=s, status="ok", time_ms=10.0 * s, memory_MiB=100.0 * s)
        for s in (1, 2)
    ] + [
        dict(mixer="mha", mode="infer", grad=0, seconds=1, status="ok", time_ms=5.0, memory_MiB=50.0),
        dict(mixer="mha", mode="infer", grad=0, seconds=2, status="oom"),
    ]
    efficiency.write_csv(rows, tmp_path / "e.csv")
    efficiency.plot(rows, tmp_path / "e.png", "test")
    table = efficiency.markdown_table(rows, "infer")
    assert "| mha | 5 ms, 50 MiB | OOM |" in table and "| pom | 10 ms, 100 MiB | 20 ms, 200 MiB |" in table
    assert (tmp_path / "e.png").stat().st_size > 1000
    assert (tmp_path / "e.csv").read_text().startswith("mixer,mode,grad,seconds")
    again = efficiency.read_csv(tmp_path / "e.csv")
    assert efficiency.markdown_table(again, "infer") == table


def test_efficiency_main_on_cpu_one_process_per_configuration(tmp_path, keep_threads):
    """The whole CPU path: a worker process per configuration, then CSV, PNG and Markdown."""
    out = tmp_path / "run"
    argv = [
        "--device",
        "cpu",
        "--threads",
        "1",
        "--mode",
        "infer",
        "--mixers",
        "pom",
        "--layers",
        "1",
        "--batch",
        "1",
        "--seconds",
        "1",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--out",
        str(out),
    ]
    assert efficiency.main(argv) == 0
    rows = efficiency.read_csv(out / "efficiency.csv")
    assert [(r["mixer"], r["mode"], r["seconds"], r["status"]) for r in rows] == [("pom", "infer", 1, "ok")]
    assert (out / "efficiency.png").stat().st_size > 1000
    report = (out / "efficiency.md").read_text()
    assert "| infer | 1 s |" in report and "hparams/pretrain/pom.yaml" in report
    redrawn = tmp_path / "redrawn"
    assert efficiency.main(["--from-csv", str(out / "efficiency.csv"), "--out", str(redrawn)]) == 0
    assert (redrawn / "efficiency.png").stat().st_size > 1000


def test_check_passes_on_cpu(tmp_path, keep_threads):
    argv = [
        "--device",
        "cpu",
        "--threads",
        "1",
        "--batch",
        "2",
        "--seconds",
        "1",
        "--chunk-size",
        "8",
        "--out",
        str(tmp_path),
    ]
    assert check.main(argv) == 0
    report = (tmp_path / "check.md").read_text()
    assert report.count("| yes |") == 8 and "| NO |" not in report  # 2 implementations x 2 levels x 2 dtypes


def test_check_runs_with_tf32_off_and_restores_it(monkeypatch, keep_threads):
    """Every comparison runs with TF32 off for matmuls and cuDNN (importing SpeechBrain turns
    it on); the previous flags come back after the check, and after a check that fails."""
    before, seen = tf32_flags(), []
    compare = check.outputs_and_gradients

    def spy(*args, **kwargs):
        seen.append(tf32_flags())
        return compare(*args, **kwargs)

    monkeypatch.setattr(check, "outputs_and_gradients", spy)
    try:
        set_tf32_flags(True, True)
        options = dict(batch=2, seconds=1, chunk_size=8, implementations=("chunked",), layers=1)
        rows, passed = check.check(torch.device("cpu"), **options)
        assert passed and len(seen) == 2 * len(rows) == 8 and set(seen) == {(False, False)}
        assert tf32_flags() == (True, True)
        monkeypatch.setattr(check, "outputs_and_gradients", lambda *args, **kwargs: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            check.check(torch.device("cpu"), **options)
        assert tf32_flags() == (True, True)
    finally:
        set_tf32_flags(*before)


def test_check_and_floor_run_as_modules(tmp_path):
    """``python -m benchmarks.check`` / ``benchmarks.floor`` from the repository root, no path edits."""
    import subprocess

    for module in ("check", "floor"):
        assert "sys.path" not in open(os.path.join(ROOT, "benchmarks", f"{module}.py")).read()
        result = subprocess.run(
            [sys.executable, "-m", f"benchmarks.{module}", "--help"], cwd=ROOT, capture_output=True, text=True
        )
        assert result.returncode == 0 and "--device" in result.stdout, result.stderr[-2000:]


def test_floor_bytes():
    batch, frames, d, width, params, elem = 2, 10, 8, 32, 100, 4
    act, wide = batch * frames * d * elem, batch * frames * width * elem
    assert floor.floor_bytes("infer", batch, frames, d, width, params, elem) == (
        2 * act + 400,
        2 * act + 400 + 10 * wide,
    )
    assert floor.floor_bytes("train", batch, frames, d, width, params, elem) == (
        4 * act + 800,
        4 * act + 800 + 30 * wide,
    )
    # the fused design: the floor's bytes and 6 / 17 passes over [B, T, k*D*d] tensors between its kernels
    assert floor.design_bytes("infer", batch, frames, width, elem, 1000) == 1000 + 6 * wide
    assert floor.design_bytes("train", batch, frames, width, elem, 1000) == 1000 + 17 * wide


def test_floor_rows_on_cpu():
    rate, bandwidth = floor.measure_device_rates(torch.device("cpu"), torch.float32, matmul_size=64, copy_numel=4096)
    assert rate > 0 and bandwidth > 0
    info, rows = floor.pom_floor(
        torch.device("cpu"), torch.float32, batch=1, seconds=1, chunk_size=8, rates=(1e11, 1e10), repeats=1
    )
    assert (info["d_model"], info["degree"], info["expansion"], info["frames"]) == (488, 2, 2, 25)
    assert [(r["mode"], r["implementation"]) for r in rows] == [
        (mode, impl) for mode in ("infer", "train") for impl in ("plain", "chunked", "fused")
    ]
    infer, train = rows[0], rows[3]
    assert train["gflop"] == pytest.approx(3 * infer["gflop"], rel=0.02)  # backward: two more products per forward one
    assert infer["matmul_floor_ms"] == pytest.approx(1000 * infer["gflop"] * 1e9 / 1e11)
    assert all(r["time_ms"] > 0 and r["x_floor"] > 0 for r in rows)
    assert all(r["design_ms"] >= r["floor_ms"] and r["x_design"] == pytest.approx(r["time_ms"] / r["design_ms"])
               for r in rows)  # fmt: skip
    saved = {r["implementation"]: r["saved_MiB"] for r in rows if r["mode"] == "train"}
    assert saved["chunked"] < saved["plain"]  # the chunked path recomputes the wide intermediates
    assert "| train | chunked |" in floor.markdown(info, rows)
