#!/usr/bin/env python
"""Efficiency benchmark of the pre-training encoders (the PoM paper's Figure 2 and more).

For each mixer, the full pre-training encoder (SpeechBrain's CNN front end +
12 Conformer layers, parameter-matched) is timed on random 80-dim fbank
features (100 frames per second of audio; feature extraction is not timed):

* ``infer``: forward only, ``torch.no_grad()`` (``--grad``: autograd on, as in
  the paper's Figure 2), eval mode;
* ``train``: one training step, forward + backward of ``mean(out^2)`` in train
  mode (no optimizer step; the parameter gradients count as memory).

GPU (``--device cuda``): bf16 autocast, batch 6, 10 to 600 s, median of
``--repeats`` runs timed with CUDA events after ``--warmup`` runs, memory =
``torch.cuda.max_memory_allocated()`` above what is allocated before the run
(weights and input). Out of memory is a result (status ``oom``), not a crash.
CPU (``--device cpu``): small sizes, each configuration in its own subprocess,
time = median ``perf_counter``, memory = peak RSS (``VmHWM``) above the RSS
after building the model and input.

Models come from ``hparams/pretrain/<mixer>.yaml`` (what users train) when
those files load, else from the table :data:`MODELS` below (same sizes).

Other modes: ``--check`` (chunked and fused PoM against plain PoM on the device: outputs
and gradients), ``--floor`` (PoM layer time against its matmul / bandwidth floor).

Examples
--------
python benchmarks/efficiency.py --device cuda --out benchmarks/out/h100
python benchmarks/efficiency.py --device cuda --mode infer --grad --dtype fp16    # paper-style forward
python benchmarks/efficiency.py --device cuda --mode infer --batch 1 --seconds 600 1200 --mixers mha pom pom_chunked
python benchmarks/efficiency.py --device cuda --mode infer --cuda-graphs --seconds 10 20 40
python benchmarks/efficiency.py --device cpu --out benchmarks/out/cpu
python benchmarks/efficiency.py --device cuda --check --floor
"""

import argparse
import csv
import datetime
import json
import itertools
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from pom.encoder import MixerEncoder  # noqa: E402
from pom.mixers import PolynomialMixer  # noqa: E402

FRAMES_PER_SECOND = 100  # fbank hop 10 ms; the CNN divides by 4
N_MELS = 80

#: Fallback table (same sizes as hparams/pretrain/*.yaml) and the anchor's sizes:
#: the pre-training encoders, parameter-matched to SpeechBrain's BEST-RQ
#: (CNN + encoder 89.3 M with RelPosMHAXL).
MODELS = {
    "relposmhaxl": dict(d_model=576, mixer="relposmhaxl", mixer_options={"nhead": 8, "dropout": 0.1}, positional_encoding=None),
    "ropemha": dict(d_model=576, mixer="ropemha", mixer_options={"nhead": 8, "dropout": 0.1}, positional_encoding=None),
    "mha": dict(d_model=576, mixer="mha", mixer_options={"nhead": 8, "dropout": 0.1}, positional_encoding="fixed_abs_sine"),
    "summarymixing": dict(
        d_model=632,
        mixer="summarymixing",
        mixer_options={"nhead": 8, "local_proj_hid_dim": [512], "local_proj_out_dim": 512,
                       "summary_hid_dim": [1024], "mode": "full"},
        positional_encoding="fixed_abs_sine",
    ),
    "pom": dict(d_model=488, mixer="pom", mixer_options={"degree": 2, "expansion": 2}, positional_encoding="fixed_abs_sine"),
    "pom_chunked": dict(
        d_model=488,
        mixer="pom",
        mixer_options={"degree": 2, "expansion": 2, "implementation": "chunked"},
        positional_encoding="fixed_abs_sine",
    ),
    "pom_fused": dict(
        d_model=488,
        mixer="pom",
        mixer_options={"degree": 2, "expansion": 2, "implementation": "fused"},
        positional_encoding="fixed_abs_sine",
    ),
    "pom_selective": dict(
        d_model=560, mixer="pom_selective", mixer_options={"degree": 2, "expansion": 2}, positional_encoding="fixed_abs_sine"
    ),
    "pom_frequency": dict(
        d_model=528,
        mixer="pom_frequency",
        mixer_options={"groups": 2, "degree": 2, "expansion": 2},
        positional_encoding="fixed_abs_sine",
    ),
    # the measured anchor's sizes (REFERENCE.md): MHA 576, PoM k=3, D=2, d_model 432
    "mha_576": dict(d_model=576, mixer="mha", mixer_options={"nhead": 8, "dropout": 0.1}, positional_encoding="fixed_abs_sine"),
    "pom_k3": dict(d_model=432, mixer="pom", mixer_options={"degree": 3, "expansion": 2}, positional_encoding="fixed_abs_sine"),
    "pom_k3_chunked": dict(
        d_model=432,
        mixer="pom",
        mixer_options={"degree": 3, "expansion": 2, "implementation": "chunked"},
        positional_encoding="fixed_abs_sine",
    ),
    "pom_k3_fused": dict(
        d_model=432,
        mixer="pom",
        mixer_options={"degree": 3, "expansion": 2, "implementation": "fused"},
        positional_encoding="fixed_abs_sine",
    ),
}
#: which hparams/pretrain file builds which benchmark model (chunked, fused = same file, switched)
HPARAMS_FILES = {
    "relposmhaxl": ["relposmhaxl.yaml"],
    "ropemha": ["ropemha.yaml"],
    "mha": ["mha.yaml"],
    "summarymixing": ["summarymixing.yaml"],
    "pom": ["pom.yaml"],
    "pom_chunked": ["pom.yaml"],
    "pom_fused": ["pom.yaml"],
    "pom_selective": ["pom_selective.yaml"],
    "pom_frequency": ["pom_frequency.yaml"],
    # hparams only (no table entry): the linear-attention study's other mixers
    "fastformer": ["fastformer.yaml"],
    "hypermixing": ["hypermixing.yaml"],
    "mamba": ["mamba.yaml"],
}
DEFAULT_MIXERS = ["relposmhaxl", "mha", "summarymixing", "pom", "pom_chunked", "pom_fused"]
GPU_SECONDS = [10, 20, 40, 60, 80, 160, 320, 600]
CPU_SECONDS = [2, 4, 8, 16]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


# --------------------------------------------------------------------------- #
# Models
# --------------------------------------------------------------------------- #
class PretrainEncoder(torch.nn.Module):
    """CNN front end + encoder body, called as in the pre-training recipe."""

    def __init__(self, cnn, encoder):
        super().__init__()
        self.cnn, self.encoder = cnn, encoder

    def forward(self, feats, wav_lens=None):
        return self.encoder(self.cnn(feats), wav_lens=wav_lens)


def make_cnn():
    from speechbrain.lobes.models.convolution import ConvolutionFrontEnd

    return ConvolutionFrontEnd(
        input_shape=(8, 10, N_MELS),
        num_blocks=2,
        num_layers_per_block=1,
        out_channels=(128, 32),
        kernel_sizes=(3, 3),
        strides=(2, 2),
        residuals=(False, False),
    )


def use_pom_implementation(model, chunk_size, implementation="chunked"):
    """Switches every plain :class:`PolynomialMixer` of ``model`` (product form
    for ``fused``) to the chunked or fused implementation (same parameters);
    returns how many were switched."""
    switched = 0
    for module in model.modules():
        if type(module) is PolynomialMixer and not module.causal:
            if implementation == "fused" and module.form != "product":
                continue
            module.implementation, module.chunk_size = implementation, chunk_size
            switched += 1
    return switched


def model_from_table(name, layers=12):
    spec = MODELS[name]
    encoder = MixerEncoder(
        input_size=640,
        d_model=spec["d_model"],
        num_layers=layers,
        d_ffn=2048,
        mixer=spec["mixer"],
        mixer_options=spec["mixer_options"],
        kernel_size=31,
        activation=torch.nn.GELU,
        dropout=0.1,
        positional_encoding=spec["positional_encoding"],
    )
    return PretrainEncoder(make_cnn(), encoder)


def model_from_hparams(name, layers=None):
    """The CNN and encoder of ``hparams/pretrain/<file>.yaml``, or None."""
    from pom.bestrq import load_hparams

    for fname in HPARAMS_FILES.get(name, []):
        path = os.path.join(REPO, "hparams", "pretrain", fname)
        if not os.path.isfile(path):
            continue
        tmp = tempfile.mkdtemp(prefix="pom-bench-")
        overrides = {"data_folder": tmp, "output_folder": tmp}
        if layers is not None:
            overrides["num_layers"] = layers
        hp = load_hparams(path, overrides)
        return PretrainEncoder(hp["CNN"], hp["encoder"]), os.path.relpath(path, REPO)
    return None


def build_model(name, source="auto", layers=None, chunk_size=1024):
    """Returns ``(model, source description)``."""
    model, where = None, None
    if source in ("auto", "hparams") and name in HPARAMS_FILES:
        try:
            found = model_from_hparams(name, layers)
        except Exception as err:  # a file being written, a key renamed: fall back, say so
            if source == "hparams":
                raise
            print(f"[{name}] hparams file did not load ({type(err).__name__}: {err}); using the built-in table", file=sys.stderr)
            found = None
        if found is not None:
            model, where = found
        elif source == "hparams":
            raise FileNotFoundError(f"no hparams/pretrain file for '{name}' ({HPARAMS_FILES.get(name)})")
    if model is None:
        if name not in MODELS:
            raise ValueError(f"unknown model '{name}'; known: {', '.join(MODELS)}")
        model, where = model_from_table(name, layers or 12), "table"
    for implementation in ("chunked", "fused"):
        if name.endswith("_" + implementation) and use_pom_implementation(model, chunk_size, implementation) == 0:
            raise ValueError(f"'{name}': the model has no PolynomialMixer to switch to the {implementation} implementation")
    return model, where


def count_params(model):
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- #
# One measurement
# --------------------------------------------------------------------------- #
def autocast(device, dtype):
    if dtype == torch.float32:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)


def make_step(model, feats, lens, mode, grad, device, dtype):
    """A closure running one forward (``infer``) or forward + backward (``train``)."""
    if mode == "infer":
        model.eval()

        def step():
            with torch.set_grad_enabled(grad), autocast(device, dtype):
                out = model(feats, lens)
            return out

    else:
        model.train()

        def step():
            model.zero_grad(set_to_none=True)
            with autocast(device, dtype):
                out = model(feats, lens)
            out.float().pow(2).mean().backward()

    return step


def proc_status_kb(key):
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def measure_cpu(step, repeats, warmup):
    import gc

    gc.collect()
    base_kb = proc_status_kb("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        pass
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak_kb = proc_status_kb("VmHWM")
    return times, max(0, peak_kb - base_kb) * 1024


def cuda_memory_base():
    """Allocated bytes now (weights, input), with the peak counter reset."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated()


def measure_cuda(step, repeats, warmup, base=None):
    if base is None:
        base = cuda_memory_base()
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000.0)
    return times, torch.cuda.max_memory_allocated() - base


def cuda_graph_step(step, warmup=3):
    """Captures ``step`` (an inference forward on static inputs) in a CUDA graph."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def is_oom(err):
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    text = str(err).lower()
    return "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text


def run_config(cfg):
    """Measures one (model, mode, seconds) configuration; returns a result dict."""
    device = torch.device(cfg["device"])
    dtype = DTYPES[cfg["dtype"]]
    row = {k: cfg[k] for k in ("mixer", "mode", "seconds", "batch", "dtype", "device")}
    row.update(grad=int(cfg["mode"] == "infer" and cfg["grad"]), frames=cfg["seconds"] * FRAMES_PER_SECOND // 4)
    row.update(status="ok", time_ms=math.nan, time_ms_min=math.nan, memory_MiB=math.nan, source="", params_M=math.nan)
    extras = []
    if cfg.get("cuda_graphs") and cfg["mode"] == "infer":
        extras.append("cuda-graphs")
    if cfg.get("compile"):
        extras.append("compile")
    if cfg.get("no_lens"):
        extras.append("no-lens")
    row["options"] = "+".join(extras)
    torch.manual_seed(0)
    try:
        model, source = build_model(cfg["mixer"], cfg["source"], cfg.get("layers"), cfg["chunk_size"])
        row["source"], row["params_M"] = source, round(count_params(model) / 1e6, 2)
        model = model.to(device)
        if cfg.get("compile"):
            mode = "reduce-overhead" if cfg.get("cuda_graphs") and cfg["mode"] == "infer" else None
            model = torch.compile(model, mode=mode, dynamic=False)
        frames = cfg["seconds"] * FRAMES_PER_SECOND
        feats = torch.randn(cfg["batch"], frames, N_MELS, device=device)
        lens = None if cfg.get("no_lens") else torch.ones(cfg["batch"], device=device)
        step = make_step(model, feats, lens, cfg["mode"], cfg["grad"], device, dtype)
        if device.type == "cuda":
            base = cuda_memory_base()  # before any capture: a graph's memory pool counts
            if cfg.get("cuda_graphs") and not cfg.get("compile") and cfg["mode"] == "infer" and not cfg["grad"]:
                step = cuda_graph_step(step)
            times, peak = measure_cuda(step, cfg["repeats"], cfg["warmup"], base)
        else:
            torch.set_num_threads(cfg["threads"])
            times, peak = measure_cpu(step, cfg["repeats"], cfg["warmup"])
        row.update(
            time_ms=round(1000 * statistics.median(times), 2),
            time_ms_min=round(1000 * min(times), 2),
            memory_MiB=round(peak / 2**20, 1),
        )
    except Exception as err:  # noqa: BLE001 -- every failure is a recorded result
        row["status"] = "oom" if is_oom(err) else f"error: {type(err).__name__}: {str(err).splitlines()[0][:160]}"
    finally:
        if device.type == "cuda":
            import gc

            model = feats = step = None  # noqa: F841
            gc.collect()
            torch.cuda.empty_cache()
    return row


def run_config_subprocess(cfg, timeout):
    """Runs one CPU configuration in a fresh process (per-config peak RSS)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(cfg)]
    base = {k: cfg[k] for k in ("mixer", "mode", "seconds", "batch", "dtype", "device")}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
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
CSV_FIELDS = [
    "mixer", "mode", "grad", "seconds", "frames", "batch", "dtype", "device", "options", "status",
    "time_ms", "time_ms_min", "memory_MiB", "params_M", "source",
]  # fmt: skip


def write_csv(rows, path):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in CSV_FIELDS})


def markdown_table(rows, mode):
    rows = [r for r in rows if r["mode"] == mode]
    if not rows:
        return ""
    seconds = sorted({r["seconds"] for r in rows})
    mixers = list(dict.fromkeys(r["mixer"] for r in rows))
    mem_unit = "GiB" if any(r.get("memory_MiB", 0) > 4096 for r in rows if r["status"] == "ok") else "MiB"
    lines = [
        f"| {mode} | " + " | ".join(f"{s} s" for s in seconds) + " |",
        "|---|" + "---|" * len(seconds),
    ]
    for mixer in mixers:
        cells = []
        for s in seconds:
            r = next((r for r in rows if r["mixer"] == mixer and r["seconds"] == s), None)
            if r is None:
                cells.append("")
            elif r["status"] != "ok":
                cells.append("OOM" if r["status"] == "oom" else r["status"].split(":")[0])
            else:
                mem = r["memory_MiB"] / 1024 if mem_unit == "GiB" else r["memory_MiB"]
                cells.append(f"{r['time_ms']:.0f} ms, {mem:.{2 if mem_unit == 'GiB' else 0}f} {mem_unit}")
        lines.append(f"| {mixer} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def read_csv(path):
    """Rows of an ``efficiency.csv`` with numbers parsed (for --from-csv)."""
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            for key in ("grad", "seconds", "frames", "batch"):
                row[key] = int(row[key]) if row.get(key) not in (None, "") else 0
            for key in ("time_ms", "time_ms_min", "memory_MiB", "params_M"):
                row[key] = float(row[key]) if row.get(key) not in (None, "") else math.nan
            rows.append(row)
    return rows


def plot(rows, path, title, logy=False):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [m for m in ("infer", "train") if any(r["mode"] == m for r in rows)]
    fig, axes = plt.subplots(len(modes), 2, figsize=(11, 4 * len(modes)), squeeze=False)
    mixers = list(dict.fromkeys(r["mixer"] for r in rows))
    markers = "osD^v<>p*h"
    for i, mode in enumerate(modes):
        grad = any(r["mode"] == mode and int(r.get("grad", 0)) for r in rows)
        label = "forward" + (" (autograd on)" if grad else "") if mode == "infer" else "training step (fwd + bwd)"
        cpu = any(r.get("device") == "cpu" for r in rows)
        mem_label = "peak RSS above model + input (GiB)" if cpu else "peak allocated above weights + input (GiB)"
        for j, (key, ylabel) in enumerate([("time_ms", "time (ms)"), ("memory_MiB", mem_label)]):
            ax = axes[i][j]
            for k, mixer in enumerate(mixers):
                mine = sorted((r for r in rows if r["mode"] == mode and r["mixer"] == mixer), key=lambda r: r["seconds"])
                ok = [r for r in mine if r["status"] == "ok"]
                xs = [r["seconds"] for r in ok]
                ys = [r[key] / (1024 if key == "memory_MiB" else 1) for r in ok]
                (line,) = ax.plot(xs, ys, marker=markers[k % len(markers)], label=mixer)
                for r in mine:
                    if r["status"] == "oom":
                        ax.annotate("OOM", (r["seconds"], ys[-1] if ys else 0), color=line.get_color(),
                                    textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
            ax.set_xlabel("input length (s)")
            ax.set_ylabel(ylabel)
            ax.set_title(label)
            if logy:
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
        axes[i][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), platform.processor())
    except OSError:
        model = platform.processor()
    return f"{model}, {os.cpu_count()} cores"


def environment(device):
    import speechbrain

    return {
        "device": device_name(device),
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "speechbrain": speechbrain.__version__,
        "python": platform.python_version(),
        "command": "python " + " ".join([os.path.relpath(os.path.abspath(sys.argv[0]), REPO)] + sys.argv[1:]),
    }


# --------------------------------------------------------------------------- #
# --check: chunked PoM against plain PoM on the device
# --------------------------------------------------------------------------- #
def check_chunked(device, batch=2, seconds=10, chunk_size=128, implementations=("chunked", "fused")):
    """Outputs and gradients of chunked and fused vs plain PoM: one mixer and
    the full encoder, fp32 and bf16 autocast (fused runs its Triton kernels on
    CUDA, the chunked path elsewhere). Returns (rows, passed)."""
    rows, passed = [], True
    dtypes = [torch.float32, torch.bfloat16]
    frames = seconds * FRAMES_PER_SECOND
    for implementation, level, dtype in itertools.product(implementations, ("mixer", "encoder"), dtypes):
        torch.manual_seed(0)
        if level == "mixer":
            plain = PolynomialMixer(488, degree=2, expansion=2).to(device)
            fast = PolynomialMixer(488, degree=2, expansion=2, implementation=implementation, chunk_size=chunk_size).to(device)
            x = torch.randn(batch, frames // 4, 488, device=device)
            pad = torch.zeros(batch, frames // 4, dtype=torch.bool, device=device)
            pad[-1, frames // 8 :] = True
            args = lambda x: (x, pad)  # noqa: E731
        else:
            plain = model_from_table("pom", layers=2).to(device)
            fast = model_from_table("pom", layers=2).to(device)
            use_pom_implementation(fast, chunk_size, implementation)
            x = torch.randn(batch, frames, N_MELS, device=device)
            lens = torch.tensor([1.0] + [0.5] * (batch - 1), device=device)
            args = lambda x: (x, lens)  # noqa: E731
        fast.load_state_dict(plain.state_dict())
        plain.eval(), fast.eval()
        results = []
        for model in (plain, fast):
            xi = x.clone().requires_grad_(True)
            model.zero_grad(set_to_none=True)
            with autocast(device, dtype):
                out = model(*args(xi))
            torch.manual_seed(1)
            (out.float() * torch.randn_like(out, dtype=torch.float32)).sum().backward()
            grads = {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}
            results.append((out.detach().float(), xi.grad.float(), grads))
        (o1, gx1, gp1), (o2, gx2, gp2) = results

        def rel(a, b):
            return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()

        out_err, gx_err = rel(o2, o1), rel(gx2, gx1)
        gp_err = max(rel(gp2[n], gp1[n]) for n in gp1)
        tol = 1e-4 if dtype == torch.float32 else 3e-2
        ok = max(out_err, gx_err, gp_err) < tol and gp1.keys() == gp2.keys()
        passed &= ok
        rows.append(dict(implementation=implementation, level=level, dtype=str(dtype).split(".")[-1], out=out_err, grad_input=gx_err,
                         grad_params=gp_err, tol=tol, ok=ok))
    return rows, passed


# --------------------------------------------------------------------------- #
# --floor: PoM layer against its matmul / bandwidth floor
# --------------------------------------------------------------------------- #
def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn, device, repeats=10, warmup=3):
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_device_rates(device, dtype):
    """Measured dense matmul FLOP/s (in ``dtype``) and copy bandwidth (bytes/s)."""
    n = 8192 if device.type == "cuda" else 1536
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = timeit(lambda: a @ b, device, repeats=10 if device.type == "cuda" else 3)
    rate = 2 * n**3 / t
    numel = (1 << 28) if device.type == "cuda" else (1 << 25)  # 1 GiB / 128 MiB of float32
    src = torch.empty(numel, device=device, dtype=torch.float32).normal_()
    dst = torch.empty_like(src)
    t = timeit(lambda: dst.copy_(src), device, repeats=10 if device.type == "cuda" else 5)
    return rate, 2 * numel * 4 / t


def saved_activation_bytes(fn, exclude=()):
    """Bytes of the distinct tensors autograd keeps for backward while running
    ``fn()`` (storages of ``exclude``, e.g. the parameters, left out)."""
    from torch.autograd.graph import saved_tensors_hooks

    skip = {t.untyped_storage().data_ptr() for t in exclude}
    storages = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def pom_floor(device, dtype, batch, seconds, d_model=488, degree=2, expansion=2, chunk_size=1024):
    """Times one PoM mixer (plain, chunked, fused) in inference and training and sets it
    against max(FLOPs / measured matmul rate, bytes / measured bandwidth)."""
    from pom.flops import mixer_flops

    rate, bandwidth = measure_device_rates(device, dtype if dtype != torch.float32 else torch.float32)
    frames = seconds * FRAMES_PER_SECOND // 4
    elem = torch.finfo(dtype).bits // 8
    width = degree * expansion * d_model
    n_params = sum(p.numel() for p in PolynomialMixer(d_model, degree, expansion).parameters())
    act = batch * frames * d_model * elem
    wide = batch * frames * width * elem
    rows = []
    for mode in ("infer", "train"):
        flops = mixer_flops("pom", d_model, frames, batch=batch, backward=mode == "train", degree=degree, expansion=expansion)
        if mode == "infer":  # read x, write y, read the weights
            min_bytes = 2 * act + n_params * elem
            unfused = min_bytes + 2 * 5 * wide  # proj, gelu, product, gate, gated state: each written and read once
        else:  # + read dy, write dx, write weight gradients (fp32)
            min_bytes = 4 * act + n_params * (elem + 4)
            unfused = min_bytes + 3 * 2 * 5 * wide
        floor = max(flops / rate, min_bytes / bandwidth)
        for impl in ("plain", "chunked", "fused"):
            torch.manual_seed(0)
            mixer = PolynomialMixer(
                d_model, degree, expansion, implementation=impl, chunk_size=chunk_size
            ).to(device)
            x = torch.randn(batch, frames, d_model, device=device, requires_grad=mode == "train")

            def fn():
                if mode == "infer":
                    with torch.no_grad(), autocast(device, dtype):
                        mixer(x)
                else:
                    with autocast(device, dtype):
                        out = mixer(x)
                    out.float().sum().backward()

            t = timeit(fn, device, repeats=10 if device.type == "cuda" else 3, warmup=3 if device.type == "cuda" else 1)
            saved = math.nan
            if mode == "train":
                with autocast(device, dtype):
                    saved = saved_activation_bytes(lambda: mixer(x), exclude=list(mixer.parameters()) + [x]) / 2**20
            rows.append(dict(
                saved_MiB=saved,
                mode=mode, implementation=impl, time_ms=1000 * t, gflop=flops / 1e9, matmul_floor_ms=1000 * flops / rate,
                bytes_floor_ms=1000 * min_bytes / bandwidth, unfused_bytes_ms=1000 * unfused / bandwidth,
                floor_ms=1000 * floor, x_floor=t / floor,
            ))
    info = dict(rate_tflops=rate / 1e12, bandwidth_gbs=bandwidth / 1e9, batch=batch, seconds=seconds, frames=frames,
                d_model=d_model, degree=degree, expansion=expansion, dtype=str(dtype).split(".")[-1])
    return info, rows


def floor_markdown(info, rows):
    lines = [
        f"PoM mixer d_model {info['d_model']}, k={info['degree']}, D={info['expansion']}, batch {info['batch']}, "
        f"{info['seconds']} s ({info['frames']} frames), {info['dtype']}; measured matmul rate "
        f"{info['rate_tflops']:.2f} TFLOP/s, copy bandwidth {info['bandwidth_gbs']:.1f} GB/s.",
        "",
        "| mode | implementation | time (ms) | GFLOP | matmul floor (ms) | bytes floor (ms) | unfused bytes (ms) "
        "| time / floor | kept for backward (MiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        saved = "" if math.isnan(r["saved_MiB"]) else f"{r['saved_MiB']:.1f}"
        lines.append(
            f"| {r['mode']} | {r['implementation']} | {r['time_ms']:.2f} | {r['gflop']:.1f} | {r['matmul_floor_ms']:.2f} | "
            f"{r['bytes_floor_ms']:.3f} | {r['unfused_bytes_ms']:.2f} | {r['x_floor']:.1f} | {saved} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- #
# Main
# --------------------------------------------------------------------------- #
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--mixers", nargs="+", default=DEFAULT_MIXERS,
                   help=f"from {', '.join(dict.fromkeys([*MODELS, *HPARAMS_FILES]))}")
    p.add_argument("--seconds", nargs="+", type=int, help=f"input lengths (default GPU {GPU_SECONDS}, CPU {CPU_SECONDS})")
    p.add_argument("--batch", type=int, help="batch size (default GPU 6, CPU 2)")
    p.add_argument("--mode", choices=["infer", "train", "both"], default="both")
    p.add_argument("--grad", action="store_true", help="inference forward with autograd on (the paper's Figure 2)")
    p.add_argument("--dtype", choices=list(DTYPES), help="autocast dtype (default GPU bf16, CPU fp32)")
    p.add_argument("--repeats", type=int, help="timed runs (default GPU 10, CPU 3)")
    p.add_argument("--warmup", type=int, help="untimed runs first (default GPU 10, CPU 1)")
    p.add_argument("--layers", type=int, help="override the number of Conformer layers (default: 12)")
    p.add_argument("--source", choices=["auto", "hparams", "table"], default="auto",
                   help="models from hparams/pretrain (auto: when they load) or the built-in table")
    p.add_argument("--chunk-size", type=int, default=1024, help="frames per chunk of the chunked PoM")
    p.add_argument("--cuda-graphs", action="store_true", help="inference through a captured CUDA graph (GPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (with --cuda-graphs: reduce-overhead)")
    p.add_argument("--no-lens", action="store_true",
                   help="call the encoders without wav_lens (no padding mask: SDPA may then use FlashAttention)")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="CPU threads (on a shared machine 1 is steadier)")
    p.add_argument("--timeout", type=int, default=600, help="seconds per CPU configuration")
    p.add_argument("--check", action="store_true", help="check chunked and fused PoM against plain PoM on the device")
    p.add_argument("--floor", action="store_true", help="PoM layer time against its matmul / bandwidth floor")
    p.add_argument("--floor-seconds", type=int, help="input length of --floor (default GPU 80, CPU 16)")
    p.add_argument("--no-bench", action="store_true", help="only --check / --floor")
    p.add_argument("--logy", action="store_true", help="log-scale y axes in the plot")
    p.add_argument("--title", help="device name in the plot title (--from-csv)")
    p.add_argument("--from-csv", help="no measurement: redraw the plot and tables of an efficiency.csv into --out")
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks", "out"), help="folder for efficiency.csv/.png/.md")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    gpu = args.device == "cuda"
    args.seconds = args.seconds or (GPU_SECONDS if gpu else CPU_SECONDS)
    args.batch = args.batch or (6 if gpu else 2)
    args.dtype = args.dtype or ("bf16" if gpu else "fp32")
    args.repeats = args.repeats or (10 if gpu else 3)
    args.warmup = args.warmup if args.warmup is not None else (10 if gpu else 1)
    args.floor_seconds = args.floor_seconds or (80 if gpu else 16)
    unknown = [m for m in args.mixers if m not in MODELS and m not in HPARAMS_FILES]
    if unknown:
        p.error(f"unknown mixers {unknown}; known: {', '.join(MODELS)}")
    if gpu and not torch.cuda.is_available():
        p.error("--device cuda but no CUDA device is available")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(run_config(json.loads(args.worker))), flush=True)
        return 0
    if args.from_csv:
        rows = read_csv(args.from_csv)
        os.makedirs(args.out, exist_ok=True)
        first = rows[0]
        title = f"{args.title or first['device']} | batch {first['batch']}, {first['dtype']}" + (", autograd on" if first["grad"] else "")
        plot(rows, os.path.join(args.out, "efficiency.png"), title, args.logy)
        print("\n\n".join(markdown_table(rows, m) for m in ("infer", "train") if any(r["mode"] == m for r in rows)))
        return 0
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    env = environment(device)
    report = [f"device: {env['device']}; date {env['date']}; torch {env['torch']}"
              + (f" (CUDA {env['cuda']})" if env["cuda"] else "") + f"; speechbrain {env['speechbrain']}",
              f"command: `{env['command']}`", ""]
    status = 0
    if args.check:
        rows, passed = check_chunked(device)
        report += ["Chunked and fused PoM vs plain PoM (relative L2 errors):", "",
                   "| implementation | level | dtype | output | input grad | param grads (max) | tol | ok |",
                   "|---|---|---|---|---|---|---|---|"]
        report += [f"| {r['implementation']} | {r['level']} | {r['dtype']} | {r['out']:.1e} | {r['grad_input']:.1e} | {r['grad_params']:.1e} | "
                   f"{r['tol']:.0e} | {'yes' if r['ok'] else 'NO'} |" for r in rows] + [""]
        status |= 0 if passed else 1
        print("\n".join(report[-len(rows) - 4 :]), flush=True)
    if args.floor:
        info, rows = pom_floor(device, DTYPES[args.dtype], args.batch, args.floor_seconds, chunk_size=args.chunk_size)
        text = floor_markdown(info, rows)
        report += [text, ""]
        print(text, flush=True)
        with open(os.path.join(args.out, "floor.json"), "w", encoding="utf-8") as f:
            json.dump({"env": env, "info": info, "rows": rows}, f, indent=1)
    if not args.no_bench:
        modes = ["infer", "train"] if args.mode == "both" else [args.mode]
        results = []
        for mode in modes:
            for mixer in args.mixers:
                for seconds in args.seconds:
                    cfg = dict(mixer=mixer, mode=mode, seconds=seconds, batch=args.batch, dtype=args.dtype,
                               device=args.device, grad=args.grad, repeats=args.repeats, warmup=args.warmup,
                               layers=args.layers, source=args.source, chunk_size=args.chunk_size,
                               cuda_graphs=args.cuda_graphs, compile=args.compile, threads=args.threads,
                               no_lens=args.no_lens)
                    t0 = time.time()
                    row = run_config_subprocess(cfg, args.timeout) if device.type == "cpu" else run_config(cfg)
                    results.append(row)
                    print(f"{mode:5s} {mixer:15s} {seconds:4d} s: {row['status']:4s} {row.get('time_ms', '')} ms "
                          f"{row.get('memory_MiB', '')} MiB ({time.time() - t0:.0f} s wall)", flush=True)
                    write_csv(results, os.path.join(args.out, "efficiency.csv"))
        title = (f"{env['device']} | batch {args.batch}, {args.dtype}"
                 + (", autograd on" if args.grad else "") + (f", {args.layers} layers" if args.layers else ""))
        plot(results, os.path.join(args.out, "efficiency.png"), title, args.logy)
        sources = sorted({f"{r['mixer']}: {r.get('source', '')} ({r.get('params_M', '')} M)" for r in results})
        report += [f"batch {args.batch}, {args.dtype}, median of {args.repeats} after {args.warmup} warm-up"
                   + (", autograd on" if args.grad else ""), "models: " + "; ".join(sources), ""]
        report += [markdown_table(results, m) + "\n" for m in modes]
        print("\n".join(report[-len(modes) :]))
    with open(os.path.join(args.out, "efficiency.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(report) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
