"""Smoke tests of benchmarks/efficiency.py on the CPU (tiny sizes)."""

import importlib.util
import math
import os

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("efficiency", os.path.join(ROOT, "benchmarks", "efficiency.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def config(**kw):
    cfg = dict(mixer="pom_chunked", mode="train", seconds=1, batch=1, dtype="fp32", device="cpu", grad=False,
               repeats=1, warmup=0, layers=1, source="table", chunk_size=8, cuda_graphs=False, compile=False, threads=1)
    cfg.update(kw)
    return cfg


def test_table_models_build_and_chunked_switch(bench):
    model, source = bench.build_model("pom_chunked", "table", layers=1, chunk_size=8)
    assert source == "table"
    mixers = [m for m in model.modules() if isinstance(m, bench.PolynomialMixer)]
    assert mixers and all(m.implementation == "chunked" and m.chunk_size == 8 for m in mixers)
    out = model(torch.randn(2, 100, 80), torch.tensor([1.0, 0.5]))
    assert out.shape == (2, 25, 488)


def test_hparams_models_when_present(bench):
    if not os.path.isfile(os.path.join(ROOT, "hparams", "pretrain", "pom.yaml")):
        pytest.skip("hparams/pretrain/pom.yaml not written yet")
    model, source = bench.build_model("pom", "hparams", layers=1)
    assert source.endswith("pom.yaml")
    assert model(torch.randn(1, 40, 80)).shape[:2] == (1, 10)


@pytest.mark.parametrize("mode", ["infer", "train"])
def test_run_config_records_time_and_memory(bench, mode):
    row = bench.run_config(config(mode=mode))
    assert row["status"] == "ok", row["status"]
    assert row["time_ms"] > 0 and row["memory_MiB"] >= 0 and not math.isnan(row["params_M"])


def test_failures_are_recorded_not_raised(bench):
    row = bench.run_config(config(mixer="no_such_mixer"))
    assert row["status"].startswith("error: ValueError") and math.isnan(row["time_ms"])


def test_outputs_csv_table_and_plot(bench, tmp_path):
    rows = [
        dict(mixer="pom", mode="infer", grad=0, seconds=s, status="ok", time_ms=10.0 * s, memory_MiB=100.0 * s)
        for s in (1, 2)
    ] + [dict(mixer="mha", mode="infer", grad=0, seconds=1, status="ok", time_ms=5.0, memory_MiB=50.0),
         dict(mixer="mha", mode="infer", grad=0, seconds=2, status="oom")]
    bench.write_csv(rows, tmp_path / "e.csv")
    bench.plot(rows, tmp_path / "e.png", "test")
    table = bench.markdown_table(rows, "infer")
    assert "OOM" in table and "| pom | 10 ms, 100 MiB | 20 ms, 200 MiB |" in table
    assert (tmp_path / "e.png").stat().st_size > 1000
    assert (tmp_path / "e.csv").read_text().startswith("mixer,mode,grad,seconds")


def test_check_mode_passes_on_cpu(bench):
    rows, passed = bench.check_chunked(torch.device("cpu"), batch=2, seconds=1, chunk_size=8)
    assert passed, rows


def test_fallback_table_matches_the_pretraining_files(bench):
    """The script's built-in table (used only when a YAML does not load) describes the same models
    as hparams/pretrain: same parameter count and same mixer per layer."""
    shared = [name for name in bench.MODELS if name in bench.HPARAMS_FILES]
    assert {"relposmhaxl", "summarymixing", "pom"} <= set(shared)
    for name in shared:
        table, _ = bench.build_model(name, "table", layers=1)
        yaml, _ = bench.build_model(name, "hparams", layers=1)
        assert bench.count_params(table) == bench.count_params(yaml), name
        assert repr(table.encoder.encoder.layers[0].mixer) == repr(yaml.encoder.encoder.layers[0].mixer), name
