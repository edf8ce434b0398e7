"""pom.measure: each measurement runs in a fresh process whose peak memory is its own, failures are
results (out of memory under the limit, time-out, error) and end a series, and the encoders-alone
measurement that `make demo` and benchmarks/long_recordings.py share writes its table and plot."""

import os
import time

from pom.measure import encoders, process

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = {"d_model": 32, "num_layers": 1, "d_ffn": 64, "kernel_size": 7, "cnn_channels": "(8,8)", "cnn_output_size": 160}


def sleeper(cfg):
    """A worker that sleeps ``cfg["seconds"]``."""
    time.sleep(cfg["seconds"])
    return {}


def test_the_peak_memory_is_the_measurement_s_own():
    """The caller holds 400 MiB; a measurement that allocates 64 MiB peaks far below that, and one
    that allocates 256 MiB adds at least that much to its start."""
    held = bytearray(400 * 2**20)
    held[::4096] = b"\1" * len(held[::4096])
    small = process.measure("pom.measure.process:allocate", {"mib": 64})
    large = process.measure("pom.measure.process:allocate", {"mib": 256})
    assert small["status"] == large["status"] == "ok"
    assert 60 <= small["extra_rss_MiB"] < 100 and small["peak_rss_MiB"] < 300
    assert large["extra_rss_MiB"] >= 250 and large["peak_rss_MiB"] - small["peak_rss_MiB"] > 150
    del held


def test_failures_are_results():
    limit = 400 * 2**20  # bytes of data: the interpreter fits, 1 GiB more does not
    assert process.measure("pom.measure.process:allocate", {"mib": 1024}, memory_limit=limit)["status"] == "oom"
    begin = time.time()
    assert process.measure("test_measure:sleeper", {"seconds": 30}, timeout=3, cwd=HERE)["status"] == "timeout"
    assert time.time() - begin < 20
    assert process.measure("test_measure:no_such_worker", {}, cwd=HERE)["status"].startswith("error: AttributeError")
    assert (
        process.failed("oom") and process.failed("timeout") and process.failed("error: x") and not process.failed("ok")
    )


def test_a_failure_skips_the_longer_inputs_of_its_series(tmp_path):
    rows = encoders.measure_encoders({"pom": ("pom", TINY)}, [2, 4, 8], timeout=0.5, log=None)
    assert [r["status"] for r in rows] == ["timeout", "skipped (timeout at 2 s)", "skipped (timeout at 2 s)"]
    png = encoders.write_report(rows, str(tmp_path), "a test", threads=1)
    assert os.path.getsize(png) > 1000
    assert "| pom | bounded | timeout | skipped | skipped |" in (tmp_path / "encoders.md").read_text()


def test_both_paths_of_several_encoders_give_rows_the_report_keeps(tmp_path):
    models = {"pom": ("pom", TINY), "summarymixing": ("summarymixing", TINY)}
    rows = encoders.measure_encoders(models, [2], paths=encoders.PATHS, log=None)
    assert [(r["name"], r["path"], r["status"]) for r in rows] == [
        (name, path, "ok") for name in models for path in encoders.PATHS
    ]
    assert all(r["params_M"] > 0 and r["wall_s"] > 0 and r["source"].startswith("hparams/pretrain/") for r in rows)
    encoders.write_report(rows, str(tmp_path), "a test", threads=1, stem="demo")
    assert sorted(os.listdir(tmp_path)) == ["demo.csv", "demo.md", "demo.png"]
    assert len((tmp_path / "demo.csv").read_text().splitlines()) == 1 + len(rows)
