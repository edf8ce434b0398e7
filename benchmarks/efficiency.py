"""Efficiency benchmark of the pre-training encoders (the PoM paper's Figure 2 and more).

Each model is the CNN front end + Conformer encoder of
``hparams/pretrain/<experiment>.yaml`` (``benchmarks/common.py``: every
experiment file, and the variants ``pom_chunked``, ``pom_fused``, ``pom_k3``,
...), timed on random 80-dim fbank features (100 frames per second of audio;
feature extraction is not timed):

* ``infer``: forward only, ``torch.no_grad()`` (``--grad``: autograd on, as in
  the paper's Figure 2), eval mode;
* ``train``: one training step, forward + backward of ``mean(out^2)`` in train
  mode (no optimizer step; the parameter gradients count as memory).

GPU (``--device cuda``): each model is built once and measured at every
length in one process; bf16 autocast, batch 6, 10 to 600 s, median of
``--repeats`` runs timed with CUDA events after ``--warmup`` runs, memory =
``torch.cuda.max_memory_allocated()`` above what is allocated before the run
(weights and input). Out of memory is a result (status ``oom``), not a crash.
CPU (``--device cpu``): small sizes, each configuration in its own process,
time = median ``perf_counter``, memory = peak RSS (``VmHWM``) above the RSS
after building the model and input.

Writes ``efficiency.csv``, ``efficiency.png`` (time and memory against length,
one line per model) and ``efficiency.md`` into ``--out``. The equivalence check
of the fast PoM is ``benchmarks/check.py``, the PoM layer against its floor
``benchmarks/floor.py``.

Examples
--------
python -m benchmarks.efficiency --device cuda --out benchmarks/runs/h100
python -m benchmarks.efficiency --device cuda --mode infer --grad --dtype fp16    # paper-style forward
python -m benchmarks.efficiency --device cuda --mode infer --batch 1 --seconds 600 1200 --mixers mha pom pom_chunked
python -m benchmarks.efficiency --device cuda --mode infer --cuda-graphs --seconds 10 20 40
python -m benchmarks.efficiency --device cpu --threads 1 --batch 1 --seconds 4 8 16 32 --out benchmarks/runs/cpu
"""

import argparse
import csv
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time

if __name__ == "__main__" and not __package__:  # run as a file: the package benchmarks is not importable
    sys.exit("run it from the repository root as a module: python -m benchmarks.efficiency ...")

import torch  # noqa: E402

from benchmarks import common  # noqa: E402
from pom.measure import encoders as measure_encoders  # noqa: E402
from pom.parameters import count_parameters  # noqa: E402

DEFAULT_MIXERS = ["relposmhaxl", "mha", "summarymixing", "pom", "pom_chunked", "pom_fused"]
GPU_SECONDS = [10, 20, 40, 60, 80, 160, 320, 600]
CPU_SECONDS = [2, 4, 8, 16]
CSV_FIELDS = [
    "mixer", "mode", "grad", "seconds", "frames", "batch", "dtype", "device", "options", "status",
    "time_ms", "time_ms_min", "memory_MiB", "params_M", "source",
]  # fmt: skip


# --------------------------------------------------------------------------- #
# One measurement
# --------------------------------------------------------------------------- #
def make_step(model, feats, lens, mode, grad, device, dtype):
    """A closure running one forward (``infer``) or forward + backward (``train``)."""
    if mode == "infer":
        model.eval()

        def step():
            with torch.set_grad_enabled(grad), common.autocast(device, dtype):
                return model(feats, lens)

    else:
        model.train()

        def step():
            model.zero_grad(set_to_none=True)
            with common.autocast(device, dtype):
                out = model(feats, lens)
            out.float().pow(2).mean().backward()

    return step


def new_row(cfg, seconds):
    """The CSV row of one configuration, nothing measured yet."""
    infer_graphs = cfg.get("cuda_graphs") and cfg["mode"] == "infer"
    row = {key: cfg[key] for key in ("mixer", "mode", "batch", "dtype", "device")}
    row.update(seconds=seconds, grad=int(cfg["mode"] == "infer" and cfg["grad"]))
    row.update(frames=seconds * common.FRAMES_PER_SECOND // 4, status="ok", time_ms=math.nan, time_ms_min=math.nan)
    row.update(memory_MiB=math.nan, source="", params_M=math.nan)
    options = [("cuda-graphs", infer_graphs), ("compile", cfg.get("compile")), ("no-lens", cfg.get("no_lens"))]
    row["options"] = "+".join(name for name, on in options if on)
    return row


def failure(err):
    """A row status for an exception: ``oom``, or ``error: <type>: <message>``."""
    return "oom" if common.is_oom(err) else f"error: {type(err).__name__}: {str(err).splitlines()[0][:160]}"


def run_lengths(cfg, lengths, on_row=None):
    """Measures one model and mode at every input length of ``lengths``; the
    model is built once (from its YAML file) and reused. Returns the CSV rows;
    every failure is a result (``oom``, ``error: ...``), and a model that cannot
    be built fails every length. ``on_row(row)`` is called after each length."""
    device = torch.device(cfg["device"])
    dtype = common.DTYPES[cfg["dtype"]]
    infer_graphs = cfg.get("cuda_graphs") and cfg["mode"] == "infer"
    rows = [new_row(cfg, seconds) for seconds in lengths]
    model = None
    try:
        source = common.describe(cfg["mixer"], cfg.get("layers"), cfg.get("chunk_size"))
        model, _ = common.build_model(cfg["mixer"], cfg.get("layers"), cfg.get("chunk_size"))
        params = round(count_parameters(model) / 1e6, 2)
        model = model.to(device)
        if cfg.get("compile"):
            model = torch.compile(model, mode="reduce-overhead" if infer_graphs else None, dynamic=False)
    except Exception as err:  # noqa: BLE001 -- every failure is a recorded result
        for row in rows:
            row["status"] = failure(err)
            if on_row:
                on_row(row)
        return rows
    for row in rows:
        row.update(source=source, params_M=params)
        feats = step = None
        try:
            torch.manual_seed(0)
            feats = torch.randn(cfg["batch"], row["seconds"] * common.FRAMES_PER_SECOND, common.N_MELS, device=device)
            lens = None if cfg.get("no_lens") else torch.ones(cfg["batch"], device=device)
            step = make_step(model, feats, lens, cfg["mode"], cfg["grad"], device, dtype)
            if device.type == "cuda":
                base = common.cuda_memory_base()  # before any capture: a graph's memory pool counts
                if infer_graphs and not cfg.get("compile") and not cfg["grad"]:
                    step = common.cuda_graph_step(step)
                times, peak = common.measure_cuda(step, cfg["repeats"], cfg["warmup"], base)
            else:
                torch.set_num_threads(cfg["threads"])
                times, peak = common.measure_cpu(step, cfg["repeats"], cfg["warmup"])
            row.update(
                time_ms=round(1000 * statistics.median(times), 2),
                time_ms_min=round(1000 * min(times), 2),
                memory_MiB=round(peak / 2**20, 1),
            )
        except Exception as err:  # noqa: BLE001 -- every failure is a recorded result
            row["status"] = failure(err)
        finally:  # the next length starts from the weights alone: no gradients, an empty allocator
            feats = step = None  # noqa: F841
            model.zero_grad(set_to_none=True)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        if on_row:
            on_row(row)
    return rows


def run_config(cfg):
    """Measures one (model, mode, seconds) configuration; returns a CSV row."""
    return run_lengths(cfg, [cfg["seconds"]])[0]


def run_config_subprocess(cfg, timeout):
    """Runs one CPU configuration in a fresh process (per-configuration peak RSS)."""
    cmd = [sys.executable, "-m", "benchmarks.efficiency", "--worker", json.dumps(cfg)]
    base = {key: cfg[key] for key in ("mixer", "mode", "seconds", "batch", "dtype", "device")}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=common.REPO)
    except subprocess.TimeoutExpired:
        return {**base, "status": f"timeout ({timeout} s)"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    why = "killed (out of memory?)" if proc.returncode in (-9, 137) else f"exit {proc.returncode}"
    return {**base, "status": f"error: {why}: {proc.stderr.strip().splitlines()[-1:] or ''}"}


# --------------------------------------------------------------------------- #
# Outputs
# --------------------------------------------------------------------------- #
def write_csv(rows, path):
    measure_encoders.write_csv(rows, path, fields=CSV_FIELDS)


def read_csv(path):
    """Rows of an ``efficiency.csv``, numbers parsed (for ``--from-csv``)."""
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            for key in ("grad", "seconds", "frames", "batch"):
                row[key] = int(row[key]) if row.get(key) not in (None, "") else 0
            for key in ("time_ms", "time_ms_min", "memory_MiB", "params_M"):
                row[key] = float(row[key]) if row.get(key) not in (None, "") else math.nan
            rows.append(row)
    return rows


def markdown_table(rows, mode):
    """``| mode | 10 s | ...`` with one ``time, memory`` cell per model and length."""
    rows = [r for r in rows if r["mode"] == mode]
    if not rows:
        return ""
    seconds = sorted({r["seconds"] for r in rows})
    mixers = list(dict.fromkeys(r["mixer"] for r in rows))
    gib = any(r.get("memory_MiB", 0) > 4096 for r in rows if r["status"] == "ok")
    lines = [f"| {mode} | " + " | ".join(f"{s} s" for s in seconds) + " |", "|---|" + "---|" * len(seconds)]
    for mixer in mixers:
        cells = []
        for s in seconds:
            r = next((r for r in rows if r["mixer"] == mixer and r["seconds"] == s), None)
            if r is None:
                cells.append("")
            elif r["status"] != "ok":
                cells.append("OOM" if r["status"] == "oom" else r["status"].split(":")[0])
            elif gib:
                cells.append(f"{r['time_ms']:.0f} ms, {r['memory_MiB'] / 1024:.2f} GiB")
            else:
                cells.append(f"{r['time_ms']:.0f} ms, {r['memory_MiB']:.0f} MiB")
        lines.append(f"| {mixer} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows, path, title, logy=False):
    """Time and memory against length, one row of panels per mode, one line per model."""
    modes = [m for m in ("infer", "train") if any(r["mode"] == m for r in rows)]
    fig, axes = common.figure(len(modes))
    mixers = list(dict.fromkeys(r["mixer"] for r in rows))
    cpu = any(r.get("device") == "cpu" for r in rows)
    mem_label = "peak RSS above model + input (GiB)" if cpu else "peak allocated above weights + input (GiB)"
    for i, mode in enumerate(modes):
        grad = any(r["mode"] == mode and int(r.get("grad", 0)) for r in rows)
        label = ("forward" + (" (autograd on)" if grad else "")) if mode == "infer" else "training step (fwd + bwd)"
        for j, (key, ylabel, scale) in enumerate([("time_ms", "time (ms)", 1), ("memory_MiB", mem_label, 1024)]):
            ax = axes[i][j]
            for k, mixer in enumerate(mixers):
                mine = sorted(
                    (r for r in rows if r["mode"] == mode and r["mixer"] == mixer), key=lambda r: r["seconds"]
                )
                common.draw_series(ax, mine, key, mixer, k, scale)
            ax.set_xlabel("input length (s)")
            ax.set_ylabel(ylabel)
            ax.set_title(label)
            if logy:
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
        axes[i][0].legend(fontsize=8)
    common.save_figure(fig, path, title)


# --------------------------------------------------------------------------- #
# Main
# --------------------------------------------------------------------------- #
def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common.add_device_arguments(p)
    p.add_argument(
        "--mixers",
        nargs="+",
        default=DEFAULT_MIXERS,
        metavar="MODEL",
        help=f"benchmark models: {', '.join(common.model_names())}",
    )
    p.add_argument(
        "--seconds", nargs="+", type=int, help=f"input lengths (default GPU {GPU_SECONDS}, CPU {CPU_SECONDS})"
    )
    p.add_argument("--batch", type=int, help="batch size (default GPU 6, CPU 2)")
    p.add_argument("--mode", choices=["infer", "train", "both"], default="both")
    p.add_argument("--grad", action="store_true", help="inference forward with autograd on (the paper's Figure 2)")
    p.add_argument("--dtype", choices=list(common.DTYPES), help="autocast dtype (default GPU bf16, CPU fp32)")
    p.add_argument("--repeats", type=int, help="timed runs (default GPU 10, CPU 3)")
    p.add_argument("--warmup", type=int, help="untimed runs first (default GPU 10, CPU 1)")
    p.add_argument("--layers", type=int, help="override the number of Conformer layers (num_layers)")
    p.add_argument("--chunk-size", type=int, default=1024, help="frames per chunk of the chunked / fused PoM")
    p.add_argument("--cuda-graphs", action="store_true", help="inference through a captured CUDA graph (GPU)")
    p.add_argument(
        "--compile", action="store_true", help="torch.compile the model (with --cuda-graphs: reduce-overhead)"
    )
    p.add_argument(
        "--no-lens",
        action="store_true",
        help="call the encoders without wav_lens (no padding mask: SDPA may then use FlashAttention)",
    )
    p.add_argument("--timeout", type=int, default=600, help="seconds per CPU configuration")
    p.add_argument("--logy", action="store_true", help="log-scale y axes in the plot")
    p.add_argument("--title", help="device name in the plot title (--from-csv)")
    p.add_argument("--from-csv", help="no measurement: redraw the plot and tables of an efficiency.csv into --out")
    p.add_argument(
        "--out", default=os.path.join(common.REPO, "benchmarks", "out"), help="folder for efficiency.csv/.png/.md"
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    gpu = args.device == "cuda"
    args.seconds = args.seconds or (GPU_SECONDS if gpu else CPU_SECONDS)
    args.batch = args.batch or (6 if gpu else 2)
    args.dtype = args.dtype or ("bf16" if gpu else "fp32")
    args.repeats = args.repeats or (10 if gpu else 3)
    args.warmup = args.warmup if args.warmup is not None else (10 if gpu else 1)
    unknown = [m for m in args.mixers if m not in common.model_names()]
    if unknown:
        p.error(f"unknown models {unknown}; known: {', '.join(common.model_names())}")
    if not (args.worker or args.from_csv):
        common.open_device(args, p)
    return args


def redraw(args):
    """``--from-csv``: the plot and the tables of a finished run, no measurement."""
    rows = read_csv(args.from_csv)
    os.makedirs(args.out, exist_ok=True)
    first = rows[0]
    title = f"{args.title or first['device']} | batch {first['batch']}, {first['dtype']}" + (
        ", autograd on" if first["grad"] else ""
    )
    plot(rows, os.path.join(args.out, "efficiency.png"), title, args.logy)
    print("\n\n".join(markdown_table(rows, m) for m in ("infer", "train") if any(r["mode"] == m for r in rows)))
    return 0


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(run_config(json.loads(args.worker))), flush=True)
        return 0
    if args.from_csv:
        return redraw(args)
    device = torch.device(args.device)
    os.makedirs(args.out, exist_ok=True)
    env = common.environment(device)
    modes = ["infer", "train"] if args.mode == "both" else [args.mode]
    results = []

    def record(row, started):
        results.append(row)
        print(
            f"{row['mode']:5s} {row['mixer']:15s} {row['seconds']:4d} s: {row['status']:4s} {row.get('time_ms', '')} "
            f"ms {row.get('memory_MiB', '')} MiB ({time.time() - started[0]:.0f} s wall)",
            flush=True,
        )
        started[0] = time.time()
        write_csv(results, os.path.join(args.out, "efficiency.csv"))

    for mode in modes:
        for mixer in args.mixers:
            cfg = dict(
                mixer=mixer,
                mode=mode,
                batch=args.batch,
                dtype=args.dtype,
                device=args.device,
                grad=args.grad,
                repeats=args.repeats,
                warmup=args.warmup,
                layers=args.layers,
                chunk_size=args.chunk_size,
                cuda_graphs=args.cuda_graphs,
                compile=args.compile,
                threads=args.threads,
                no_lens=args.no_lens,
            )
            started = [time.time()]
            if device.type == "cpu":  # one process per configuration: its own peak RSS
                for seconds in args.seconds:
                    record(run_config_subprocess(dict(cfg, seconds=seconds), args.timeout), started)
            else:  # one model per mixer, reused at every length
                run_lengths(cfg, args.seconds, on_row=lambda row: record(row, started))
    title = (
        f"{env['device']} | batch {args.batch}, {args.dtype}"
        + (", autograd on" if args.grad else "")
        + (f", {args.layers} layers" if args.layers else "")
    )
    plot(results, os.path.join(args.out, "efficiency.png"), title, args.logy)
    sources = list(dict.fromkeys(f"{r['mixer']}: {r.get('source', '')} ({r.get('params_M', '')} M)" for r in results))
    tables = [markdown_table(results, m) for m in modes]
    report = [
        common.environment_line(env),
        f"command: `{env['command']}`",
        "",
        f"batch {args.batch}, {args.dtype}, median of {args.repeats} after {args.warmup} warm-up"
        + (", autograd on" if args.grad else ""),
        "",
        "models: " + "; ".join(sources),
        "",
    ]
    with open(os.path.join(args.out, "efficiency.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(report + [t + "\n" for t in tables]))
    print("\n\n".join(tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
