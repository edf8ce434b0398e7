"""Encoders alone against input length: time and peak memory of one forward, each length in its own process.

A model is the CNN front end + Conformer encoder of
``hparams/pretrain/<experiment>.yaml`` with overrides (sizes, mixer options),
with random weights (time and memory do not depend on them), run on random
80-dim features of the input's length (100 frames per second), batch 1,
without autograd: through the bounded path (``bounded``:
:func:`pom.inference.bounded_encode`, the CNN in pieces and the layers in time
chunks, PoM's chunked op, attention as it is) or the module's plain forward
(``plain``). Each (model, path, length) runs in a fresh process
(:func:`pom.measure.process.measure`): its wall time, the peak RSS of the
process (``peak_rss_MiB``) and that peak above the RSS before the forward
(``extra_rss_MiB``: what the forward adds to the weights and the imports). A
failure is a result (``oom``, ``timeout``, ``error: ...``) and the model's
longer lengths on that path are then ``skipped``.

Example
-------
>>> tiny = {"d_model": 32, "num_layers": 1, "d_ffn": 64, "kernel_size": 7, "cnn_channels": "(8,8)",
...         "cnn_output_size": 160}
>>> rows = measure_encoders({"pom": ("pom", tiny)}, [2, 4], log=None)
>>> [(r["name"], r["seconds"], r["status"], r["peak_rss_MiB"] > r["extra_rss_MiB"] > 0) for r in rows]
[('pom', 2, 'ok', True), ('pom', 4, 'ok', True)]
>>> print(encoder_table(rows).splitlines()[0])
| encoder | path | 2 s | 4 s |
"""

import csv
import os
import time

from pom.measure import process
from pom.measure.plots import draw_against_length, figure, length_label, save_figure

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PRETRAIN_HPARAMS = os.path.join(ROOT, "hparams", "pretrain")
FRAMES_PER_SECOND = 100  # fbank hop 10 ms
N_MELS = 80
PATHS = ("bounded", "plain")
CSV_FIELDS = ["kind", "name", "path", "seconds", "status", "wall_s", "rtf", "peak_rss_MiB", "extra_rss_MiB",
              "params_M", "source"]  # fmt: skip


def overrides_text(overrides):
    """Overrides of an experiment file as the command line gives them (``key: value`` lines), so
    that a mapping such as ``mixer_options`` is merged key by key into the file's.

    Example
    -------
    >>> print(overrides_text({"d_model": 64, "mixer_options": {"degree": 3}, "positional_encoding": None}))
    d_model: 64
    mixer_options: {degree: 3}
    positional_encoding: null
    """

    def value(v):
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k}: {value(x)}" for k, x in v.items()) + "}"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return "null" if v is None else str(v)

    return "\n".join(f"{key}: {value(v)}" for key, v in overrides.items())


def describe(experiment, overrides=None):
    """Where a model comes from: ``hparams/pretrain/pom.yaml + {overrides}``."""
    return f"hparams/pretrain/{experiment}.yaml" + (f" + {overrides}" if overrides else "")


def build_encoder(experiment, overrides=None):
    """``(cnn, encoder)`` of ``hparams/pretrain/<experiment>.yaml`` with ``overrides`` (a dict)."""
    import tempfile

    from pom.recipe.hparams import load_hparams

    with tempfile.TemporaryDirectory(prefix="pom-encoder-") as tmp:  # the recipe's folders are required keys
        text = overrides_text({"data_folder": tmp, "output_folder": tmp, **(overrides or {})})
        hparams = load_hparams(os.path.join(PRETRAIN_HPARAMS, experiment + ".yaml"), text)
    return hparams["CNN"].eval(), hparams["encoder"].eval()


def encoder_forward(cfg):
    """The worker (in its own process): one forward of ``cfg["seconds"]`` of random features
    through ``cfg["path"]`` of the model ``cfg["experiment"]`` + ``cfg["overrides"]``."""
    import torch

    from pom.inference import bounded_encode
    from pom.parameters import count_parameters

    cnn, encoder = build_encoder(cfg["experiment"], cfg["overrides"])
    torch.manual_seed(0)
    feats = torch.randn(1, int(cfg["seconds"] * FRAMES_PER_SECOND), N_MELS)
    with process.PeakMemory() as memory, torch.no_grad():
        begin = time.perf_counter()
        if cfg["path"] == "bounded":
            out = bounded_encode(cnn, encoder, feats)
        else:
            out = encoder(cnn(feats), wav_lens=torch.ones(1))
        wall = time.perf_counter() - begin
    return {
        "wall_s": round(wall, 3), "peak_rss_MiB": round(memory.peak_MiB, 1),
        "extra_rss_MiB": round(memory.extra_MiB, 1), "params_M": round(count_parameters(cnn, encoder) / 1e6, 2),
        "frames": int(out.shape[1]),
    }  # fmt: skip


def measure_encoders(models, seconds, paths=("bounded",), threads=1, timeout=1800, memory_limit="auto", log=print):
    """Measures every model of ``models`` (``{name: (experiment, overrides)}``) on every path of
    ``paths`` at every length of ``seconds``, each in a fresh process with ``threads`` CPU threads
    and at most ``timeout`` seconds (``memory_limit``: see :func:`pom.measure.process.measure`);
    ``log``: a function given one line per measurement, or None. Returns the rows (``kind``
    ``"encoder"``, ``name``, ``path``, ``seconds``, ``status``, ``wall_s``, ``rtf``, ``peak_rss_MiB``,
    ``extra_rss_MiB``, ``params_M``, ``source``)."""
    rows = []
    for name, (experiment, overrides) in models.items():
        for path in paths:
            stopped = None
            for length in seconds:
                row = {"kind": "encoder", "name": name, "path": path, "seconds": length}
                if stopped:
                    rows.append(dict(row, status=f"skipped ({stopped})"))
                    continue
                cfg = {"experiment": experiment, "overrides": overrides, "path": path, "seconds": length}
                begin = time.time()
                got = process.measure("pom.measure.encoders:encoder_forward", cfg, threads, timeout, memory_limit)
                row["status"] = got["status"]
                if got["status"] == "ok":
                    row.update({k: got[k] for k in ("wall_s", "peak_rss_MiB", "extra_rss_MiB", "params_M")})
                    row.update(rtf=round(got["wall_s"] / length, 4), source=describe(experiment, overrides))
                elif process.failed(got["status"]):
                    stopped = f"{got['status'].split(':')[0]} at {length:g} s"
                if log:
                    log(f"encoder {name} {path} {length} s: {row['status']} {row.get('wall_s', '')} s "
                        f"{row.get('peak_rss_MiB', '')} MiB ({time.time() - begin:.0f} s wall)")  # fmt: skip
                rows.append(row)
    return rows


def encoder_table(rows):
    """Markdown: one line per (encoder, path), one ``time, peak RSS`` cell per length."""
    rows = [r for r in rows if r["kind"] == "encoder"]
    if not rows:
        return ""
    seconds = sorted({r["seconds"] for r in rows})
    lines = [
        "| encoder | path | " + " | ".join(length_label(s) for s in seconds) + " |",
        "|---|---|" + "---|" * len(seconds),
    ]
    for name, path in dict.fromkeys((r["name"], r["path"]) for r in rows):
        cells = []
        for s in seconds:
            r = next((r for r in rows if (r["name"], r["path"], r["seconds"]) == (name, path, s)), None)
            if r is None:
                cells.append("")
            elif r["status"] != "ok":
                cells.append(r["status"].split(" (")[0].split(":")[0])
            else:
                cells.append(f"{r['wall_s']:.3g} s, {r['peak_rss_MiB']:.0f} MiB")
        lines.append(f"| {name} | {path} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def encoder_sources(rows):
    """``name: hparams/pretrain/<experiment>.yaml + {overrides} (<params> M)`` of each measured model."""
    return list(dict.fromkeys(f"{r['name']}: {r['source']} ({r['params_M']} M)" for r in rows if r.get("source")))


def draw_encoders(axes, rows):
    """The encoders' panels: time, and the memory that the forward adds (imports and weights excluded)."""
    rows = [r for r in rows if r["kind"] == "encoder"]
    memory = ("extra_rss_MiB", "memory of the forward (MiB)")
    draw_against_length(axes, rows, memory, "input length (random features)", "encoders alone")


def write_csv(rows, path, fields=CSV_FIELDS):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: row.get(key, "") for key in fields})


def write_report(rows, folder, title, threads=None, stem="encoders"):
    """Writes ``<stem>.csv``, ``<stem>.md`` (the table, the machine, the models) and ``<stem>.png``
    (time and memory against length) of encoder ``rows`` into ``folder``; returns the plot's path."""
    from pom.measure.machine import machine_line

    os.makedirs(folder, exist_ok=True)
    write_csv(rows, os.path.join(folder, stem + ".csv"))
    report = [
        f"# {title}",
        "",
        machine_line(threads=threads),
        "",
        "one forward without autograd, batch 1, random features; time and peak RSS of the process "
        "(each length in its own); bounded = CNN in pieces, layers in time chunks (pom.inference)",
        "",
        encoder_table(rows),
        "",
        "models: " + "; ".join(encoder_sources(rows)),
        "",
    ]
    with open(os.path.join(folder, stem + ".md"), "w", encoding="utf-8") as f:
        f.write("\n".join(report))
    fig, axes = figure(1)
    draw_encoders(axes[0], rows)
    png = os.path.join(folder, stem + ".png")
    save_figure(fig, png, f"{title} | {threads or 1} threads")
    return png
