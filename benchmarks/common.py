"""What the benchmark scripts share: models built from the pre-training YAML
files, timing and memory measurement, and the device description.

Every benchmark model is an experiment file ``hparams/pretrain/<name>.yaml``
(what users train), optionally with overrides: :data:`VARIANTS` names the
few that are not an experiment of their own (the chunked and fused PoM, the
anchor's sizes). The model is SpeechBrain's CNN front end followed by the
encoder, called as in the pre-training recipe.

Example
-------
>>> model, hp = build_model("pom_chunked", layers=1, chunk_size=64, device="meta")
>>> hp["d_model"], hp["mixer_options"]["implementation"], hp["num_layers"]
(488, 'chunked', 1)
>>> model_spec("pom_k3")[1]
{'d_model': 432, 'mixer_options': {'degree': 3, 'expansion': 2}}
"""

import contextlib
import copy
import datetime
import gc
import glob
import os
import platform
import statistics
import sys
import tempfile
import time

import torch

# the measurement core lives in pom.measure (make demo uses it too); the scripts use these names from here
from pom.measure.encoders import FRAMES_PER_SECOND, N_MELS  # noqa: F401
from pom.measure.machine import device_name
from pom.measure.plots import MARKERS, draw_series, figure, save_figure  # noqa: F401
from pom.measure.process import is_oom, proc_status_kb  # noqa: F401
from pom.recipe.hparams import load_hparams

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAIN_HPARAMS = os.path.join(REPO, "hparams", "pretrain")

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

#: benchmark models that are an experiment file with overrides: name -> (experiment, overrides)
VARIANTS = {
    # the same PoM (same parameters) through its chunked / fused (Triton on CUDA) implementation
    "pom_chunked": ("pom", {"mixer_options": {"implementation": "chunked"}}),
    "pom_fused": ("pom", {"mixer_options": {"implementation": "fused"}}),
    # the PoM sizes of the reference H100 figures in RESULTS.md: k=3, D=2, d_model 432
    "pom_k3": ("pom", {"d_model": 432, "mixer_options": {"degree": 3, "expansion": 2}}),
    "pom_k3_chunked": (
        "pom",
        {"d_model": 432, "mixer_options": {"degree": 3, "expansion": 2, "implementation": "chunked"}},
    ),
    "pom_k3_fused": (
        "pom",
        {"d_model": 432, "mixer_options": {"degree": 3, "expansion": 2, "implementation": "fused"}},
    ),
}


# --------------------------------------------------------------------------- #
# Models
# --------------------------------------------------------------------------- #
def experiments():
    """Names of the pre-training experiment files (``base.yaml`` is not one)."""
    paths = glob.glob(os.path.join(PRETRAIN_HPARAMS, "*.yaml"))
    return sorted(os.path.basename(p)[: -len(".yaml")] for p in paths if os.path.basename(p) != "base.yaml")


def model_names():
    """Every benchmark model name: the experiments, then the variants."""
    return experiments() + list(VARIANTS)


def model_spec(name, layers=None, chunk_size=None):
    """``(experiment, overrides)`` of benchmark model ``name``; ``layers``
    overrides ``num_layers``, ``chunk_size`` the chunk of a chunked / fused PoM."""
    if name in VARIANTS:
        experiment, overrides = copy.deepcopy(VARIANTS[name])
    elif name in experiments():
        experiment, overrides = name, {}
    else:
        raise ValueError(f"unknown model '{name}'; known: {', '.join(model_names())}")
    if chunk_size and "implementation" in overrides.get("mixer_options", {}):
        overrides["mixer_options"]["chunk_size"] = chunk_size
    if layers:
        overrides["num_layers"] = layers
    return experiment, overrides


def describe(name, layers=None, chunk_size=None):
    """Where a model comes from: ``hparams/pretrain/pom.yaml + {overrides}``."""
    experiment, overrides = model_spec(name, layers, chunk_size)
    return f"hparams/pretrain/{experiment}.yaml" + (f" + {overrides}" if overrides else "")


class PretrainEncoder(torch.nn.Module):
    """CNN front end + encoder, called as in the pre-training recipe."""

    def __init__(self, cnn, encoder):
        super().__init__()
        self.cnn, self.encoder = cnn, encoder

    def forward(self, feats, wav_lens=None):
        return self.encoder(self.cnn(feats), wav_lens=wav_lens)


def build_model(name, layers=None, chunk_size=None, device=None):
    """Builds benchmark model ``name`` from its experiment file (on ``device``,
    e.g. ``"meta"``: no memory, no compute). Returns ``(model, hparams)``,
    ``hparams`` holding the encoder's ``d_model``, ``mixer``, ``mixer_options``
    and ``num_layers``."""
    experiment, overrides = model_spec(name, layers, chunk_size)
    where = torch.device(device) if device is not None else contextlib.nullcontext()
    with tempfile.TemporaryDirectory(prefix="pom-bench-") as tmp, where:
        # the recipe's folders are required keys; nothing is written but an empty checkpoint folder
        hparams = load_hparams(
            os.path.join(PRETRAIN_HPARAMS, experiment + ".yaml"),
            {"data_folder": tmp, "output_folder": tmp, **overrides},
        )
    model = PretrainEncoder(hparams["CNN"], hparams["encoder"])
    summary = {key: hparams[key] for key in ("d_model", "mixer", "num_layers")}
    summary["mixer_options"] = dict(hparams["mixer_options"])
    return model, summary


def mixer_of(model, layer=0):
    """The token mixer of one Conformer layer of a built model."""
    return model.encoder.encoder.layers[layer].mixer


# --------------------------------------------------------------------------- #
# Timing and memory
# --------------------------------------------------------------------------- #
def autocast(device, dtype):
    """Autocast to ``dtype`` on ``device`` (fp32: autocast off)."""
    if dtype == torch.float32:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn, device, repeats=10, warmup=3):
    """Median wall time of ``fn()`` in seconds (synchronized on CUDA)."""
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


def measure_cpu(step, repeats, warmup):
    """Times of ``step()`` (``perf_counter``) and its peak RSS above the RSS
    before the first run, in bytes (one configuration per process)."""
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
    return times, max(0, proc_status_kb("VmHWM") - base_kb) * 1024


def cuda_memory_base():
    """Allocated bytes now (weights, input), with the peak counter reset."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated()


def measure_cuda(step, repeats, warmup, base):
    """Times of ``step()`` (CUDA events) and the peak allocated bytes above ``base``."""
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
    """Captures ``step`` (an inference forward on static inputs) in a CUDA
    graph; returns the graph's replay."""
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


# --------------------------------------------------------------------------- #
# Devices
# --------------------------------------------------------------------------- #
def add_device_arguments(parser):
    """``--device`` (default cuda when available) and ``--threads`` (CPU)."""
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="CPU threads (on a shared machine 1 is steadier)"
    )


def open_device(args, parser):
    """The ``torch.device`` of ``args.device``, CPU threads set; a parser error
    when CUDA is asked for and absent."""
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is available")
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    return torch.device(args.device)


def environment(device):
    """Device, date, versions and the command line, for the reports."""
    import speechbrain

    return {
        "device": device_name(device),
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "speechbrain": speechbrain.__version__,
        "python": platform.python_version(),
        "command": "python " + " ".join([_program()] + sys.argv[1:]),
    }


def _program():
    """``-m benchmarks.<name>`` for a module run with ``python -m``, else the script's path."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return f"-m {spec.name}" if spec is not None and spec.name else os.path.relpath(os.path.abspath(sys.argv[0]), REPO)


def environment_line(env):
    """One Markdown line describing ``environment()``."""
    cuda = f" (CUDA {env['cuda']})" if env["cuda"] else ""
    return f"device: {env['device']}; date {env['date']}; torch {env['torch']}{cuda}; speechbrain {env['speechbrain']}"
