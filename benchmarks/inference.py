"""PyTorch eager against ONNX Runtime fp32 and int8: time, peak memory, real-time factor.

::

    python -m benchmarks.inference --model results/demo/finetune --out benchmarks/runs/inference
    python -m benchmarks.inference --quick --model RUN --out /tmp/inference   # minutes, a smoke test

For each model and input length (default 30 s, 5 min, 60 min of audio), a
forward pass from features to CTC log-probabilities, batch 1 (up to 5 min: one
warm-up, then the median of three)
(:meth:`pom.inference.CTCModel.log_probs_from_features`: eager PyTorch without
autograd, then the same function exported with :mod:`pom.export.onnx` under ONNX
Runtime, fp32 and int8), each in a fresh process (``--threads`` intra-op
threads, peak RSS of that process, ``--timeout`` seconds, ``--memory_gb``
address-space limit; a model and backend that fails or times out at one length
is ``skipped`` at the longer ones). Features are computed beforehand (they are
not part of the timing). Models:

* ``demo``: the trained ``--model`` run (its weights; ``make demo``'s
  ``results/demo/finetune``), or the demo's sizes with random weights;
* ``pom``, ``summarymixing``, ``mha``: CNN + encoder of ``hparams/pretrain/<name>.yaml``
  (the ~95 M encoders, random weights) and a linear CTC head of 29 outputs.

With ``--model``, also: the CER of the int8 model's greedy transcripts against
the fp32 model's (and against the references) on the run's ``test-clean.csv``,
and one 60-minute recording (the test-clean utterances concatenated) through
``pom.transcribe`` (PyTorch) and ``pom.transcribe --onnx`` (fp32, int8), in
overlapping windows: time and peak RSS of the whole call.

Outputs: ``inference.csv`` and ``inference.md`` (table, machine, date, command).
"""

import argparse
import csv
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("demo", "pom", "summarymixing", "mha")
BACKENDS = ("torch", "onnx", "int8")
SECONDS = (30, 300, 3600)
QUICK = {"models": ("demo",), "seconds": (5, 10), "transcribe_seconds": 40}
FIELDS = ("kind", "model", "backend", "seconds", "status", "wall_s", "rtf", "peak_rss_MiB", "params_M", "note")


def peak_rss_mib():
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def build_model(name, run=None):
    """A :class:`pom.inference.CTCModel` in eval mode (seeded random weights, or ``run``'s for ``demo``)."""
    import torch

    if name == "demo" and run:
        from pom.export.run import FinetunedRun

        return FinetunedRun(run).model()
    from speechbrain.lobes.features import Fbank
    from speechbrain.nnet.activations import Softmax
    from speechbrain.nnet.linear import Linear
    from speechbrain.processing.features import InputNormalization

    from pom.inference import CTCModel
    from pom.recipe.hparams import load_hparams

    overrides = {}
    experiment = name
    if name == "demo":
        from pom.demo import MODEL, model_overrides

        experiment, overrides = "pom", model_overrides({k: v for k, v in MODEL.items() if k != "dropout"}, None)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        h = load_hparams(os.path.join(REPO, "hparams", "pretrain", experiment + ".yaml"),
                         {"data_folder": tmp, "output_folder": tmp, **overrides})  # fmt: skip
    d_model = h["encoder"].d_model
    return CTCModel(
        compute_features=Fbank(n_mels=80), normalize=InputNormalization(norm_type="sentence"), CNN=h["CNN"],
        enc=h["encoder"], ctc_lin=Linear(input_size=d_model, n_neurons=29), log_softmax=Softmax(apply_log=True),
    ).eval()  # fmt: skip


def worker(cfg):
    """One measurement in this process: ``cfg`` keys model, backend, seconds, threads, onnx_dir, run."""
    import numpy as np

    rng = np.random.default_rng(0)
    frames = int(cfg["seconds"] * 100) + 1
    feats = (rng.standard_normal((1, frames, 80)) * 8 - 40).astype(np.float32)
    lens = np.array([frames], dtype=np.int64)
    result = {}
    if cfg["backend"] == "torch":
        import torch

        torch.set_num_threads(cfg["threads"])
        model = build_model(cfg["model"], cfg.get("run"))
        result["params_M"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
        x, x_lens = torch.from_numpy(feats), torch.from_numpy(lens)

        def step():
            with torch.no_grad():
                model.log_probs_from_features(x, x_lens)
    else:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = cfg["threads"]
        name = "model.int8.onnx" if cfg["backend"] == "int8" else "model.onnx"
        session = ort.InferenceSession(os.path.join(cfg["onnx_dir"], name), options, providers=["CPUExecutionProvider"])

        def step():
            session.run(None, {"x": feats, "x_lens": lens})

    repeats = 3 if cfg["seconds"] <= 300 else 1  # short inputs: one warm-up run, the median of three
    if repeats > 1:
        step()
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        step()
        times.append(time.perf_counter() - begin)
    result["wall_s"] = round(sorted(times)[len(times) // 2], 3)
    result["peak_rss_MiB"] = round(peak_rss_mib(), 1)
    return result


def transcribe_worker(cfg):
    """The 60-minute call: pom.transcribe (PyTorch) or its ONNX Runtime path on one recording."""
    begin = time.perf_counter()
    if cfg["backend"] == "torch":
        import torch

        torch.set_num_threads(cfg["threads"])
        from pom.inference.transcriber import Transcriber

        asr = Transcriber(cfg["run"])
    else:
        from pom.runtime.transcriber import OnnxTranscriber

        asr = OnnxTranscriber(cfg["onnx_dir"], int8=cfg["backend"] == "int8", threads=cfg["threads"])
    begin = time.perf_counter()
    [(_, text, error)] = list(asr.transcribe_files([cfg["audio"]], batch_size=1, progress=False))
    return {"wall_s": round(time.perf_counter() - begin, 3), "peak_rss_MiB": round(peak_rss_mib(), 1),
            "note": error or f"{len(text.split())} words"}  # fmt: skip


def run_worker(cfg, timeout, memory_gb):
    """``cfg`` measured in a fresh process; returns its row fields (status ok, timeout, error)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(cfg["threads"]), PYTHONPATH=REPO)

    def limit():
        size = int(memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (size, size))

    try:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.inference", "--worker", json.dumps(cfg)], cwd=REPO, env=env,
            capture_output=True, text=True, timeout=timeout, preexec_fn=limit,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "note": f"over {timeout} s"}
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        last = lines[-1] if lines else f"exit {proc.returncode}"
        memory = any(word in proc.stderr.lower() for word in ("memory", "bad_alloc", "cannot allocate"))
        return {"status": "out of memory" if memory else "error", "note": last[-160:]}
    return {"status": "ok", **json.loads(proc.stdout.strip().splitlines()[-1])}


def export_models(models, run, folder):
    """``{model: onnx folder}``: each model traced once (:func:`pom.export.onnx.export_graph`) and quantised."""
    from pom.export.onnx import export_graph, quantize

    folders = {}
    for name in models:
        out = os.path.join(folder, name)
        os.makedirs(out, exist_ok=True)
        if not os.path.isfile(os.path.join(out, "model.int8.onnx")):
            export_graph(build_model(name, run), os.path.join(out, "model.onnx"), 80)
            quantize(os.path.join(out, "model.onnx"), os.path.join(out, "model.int8.onnx"))
        folders[name] = out
    return folders


def cer_int8(run, onnx_dir):
    """``(CER int8 vs fp32, CER fp32 vs references, CER int8 vs references, utterances)`` on the run's test-clean."""
    import jiwer

    from pom.export.hub import run_data_folder
    from pom.runtime.transcriber import OnnxTranscriber

    data_root = run_data_folder(run) or ""
    with open(os.path.join(run, "test-clean.csv"), encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    paths = [row["wav"].replace("$data_root", data_root) for row in rows]
    texts = {}
    for int8 in (False, True):
        asr = OnnxTranscriber(onnx_dir, int8=int8)
        decoded = list(asr.transcribe_files(paths, batch_size=8))
        errors = [error for _, _, error in decoded if error]
        if errors:
            raise RuntimeError(f"{len(errors)} test-clean file(s) could not be read, e.g. {errors[0]}")
        texts[int8] = [text for _, text, _ in decoded]
    refs = [row["wrd"] for row in rows]
    return (100 * jiwer.cer(texts[False], texts[True]), 100 * jiwer.cer(refs, texts[False]),
            100 * jiwer.cer(refs, texts[True]), len(rows))  # fmt: skip


def long_recording(run, seconds, path):
    """The run's test-clean utterances concatenated (repeated) to ``seconds``, 16-bit FLAC."""
    import numpy as np
    import soundfile as sf

    from pom.export.hub import run_data_folder

    data_root = run_data_folder(run) or ""
    with open(os.path.join(run, "test-clean.csv"), encoding="utf-8") as f:
        parts = [sf.read(row["wav"].replace("$data_root", data_root), dtype="float32")[0] for row in csv.DictReader(f)]
    one = np.concatenate(parts)
    wav = np.tile(one, int(np.ceil(seconds * 16000 / len(one))))[: int(seconds * 16000)]
    sf.write(path, wav, 16000, subtype="PCM_16")
    return path


def report(rows, args, cer, out):
    from pom.measure.encoders import write_csv  # here: the measuring workers import no torch

    write_csv(rows, os.path.join(out, "inference.csv"), fields=FIELDS)
    lines = [
        "# Inference: PyTorch eager vs ONNX Runtime fp32 and int8", "",
        f"{datetime.date.today()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{args.threads} thread(s); `python -m benchmarks.inference {' '.join(args.argv)}`", "",
        "Forward pass, features to CTC log-probabilities, batch 1 (up to 5 min: median of 3 after a warm-up), "
        "each in a fresh process "
        "(time, real-time factor, peak RSS of the process).", "",
        "| model | backend | " + " | ".join(f"{s / 60:g} min" if s >= 60 else f"{s:g} s" for s in args.seconds) + " |",
        "|---|---|" + "---|" * len(args.seconds),
    ]  # fmt: skip
    for model in args.models:
        for backend in BACKENDS:
            cells = []
            for seconds in args.seconds:
                row = next((r for r in rows if r["kind"] == "forward" and (r["model"], r["backend"], r["seconds"])
                            == (model, backend, seconds)), None)  # fmt: skip
                if row is None or row["status"] != "ok":
                    cells.append(row["status"] if row else "-")
                else:
                    cells.append(f"{row['wall_s']:.2f} s, RTF {row['rtf']:.4f}, {row['peak_rss_MiB'] / 1024:.2f} GB")
            lines.append(f"| {model} | {backend} | " + " | ".join(cells) + " |")
    transcribe = [r for r in rows if r["kind"] == "transcribe"]
    if transcribe:
        lines += ["", f"One {transcribe[0]['seconds'] / 60:g}-minute recording through pom.transcribe (windows):", "",
                  "| path | status | time | RTF | peak RSS |", "|---|---|---|---|---|"]  # fmt: skip
        for r in transcribe:
            lines.append(f"| {r['backend']} | {r['status']} | {r.get('wall_s', '-')} s | {r.get('rtf', '-')} | "
                         f"{r.get('peak_rss_MiB', '-')} MiB |")  # fmt: skip
    if cer is not None:
        lines += ["", f"CER on the run's test-clean ({cer[3]} utterances, greedy): int8 against fp32 {cer[0]:.2f} %; "
                  f"against the references fp32 {cer[1]:.2f} %, int8 {cer[2]:.2f} %."]  # fmt: skip
    with open(os.path.join(out, "inference.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m benchmarks.inference", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a fine-tuning run (make demo's results/demo/finetune) for 'demo' and the CER")
    parser.add_argument("--models", nargs="+", choices=MODELS, help=f"default {' '.join(MODELS)}")
    parser.add_argument("--seconds", nargs="+", type=float, help="input lengths (default 30 300 3600)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per measurement (default 1800)")
    parser.add_argument("--memory_gb", type=float, default=20.0, help="address-space limit per measurement")
    parser.add_argument("--quick", action="store_true", help="demo model only, 5 and 10 s, a 40 s recording")
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "runs", "inference"), help="output folder")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        cfg = json.loads(args.worker)
        print(json.dumps((transcribe_worker if cfg.get("audio") else worker)(cfg)))
        return 0
    if args.model and not os.path.isdir(args.model):
        parser.error(f"--model {args.model} does not exist (give a fine-tuning output folder)")
    args.argv = argv
    args.models = tuple(args.models or (QUICK["models"] if args.quick else MODELS))
    args.seconds = tuple(float(s) for s in (args.seconds or (QUICK["seconds"] if args.quick else SECONDS)))
    os.makedirs(args.out, exist_ok=True)
    run = os.path.abspath(args.model) if args.model else None
    folders = export_models(args.models, run, os.path.join(args.out, "models"))
    rows, stopped = [], {}
    for model in args.models:
        for seconds in sorted(args.seconds):
            for backend in BACKENDS:
                row = {"kind": "forward", "model": model, "backend": backend, "seconds": seconds}
                if (model, backend) in stopped:  # a shorter input already failed: a longer one would too
                    row.update(status="skipped", note=stopped[model, backend])
                else:
                    cfg = {"model": model, "backend": backend, "seconds": seconds, "threads": args.threads,
                           "onnx_dir": folders[model], "run": run}  # fmt: skip
                    row.update(run_worker(cfg, args.timeout, args.memory_gb))
                if row["status"] == "ok":
                    row["rtf"] = round(row["wall_s"] / seconds, 5)
                elif row["status"] != "skipped":
                    stopped[model, backend] = f"{row['status']} at {seconds:g} s"
                rows.append(row)
                print(json.dumps(row), flush=True)
    cer = None
    if run:
        from pom.export import export_run

        exported = os.path.join(args.out, "exported")
        export_run(run, exported, onnx=True, overwrite=True)
        cer = cer_int8(run, exported)
        seconds = QUICK["transcribe_seconds"] if args.quick else max(args.seconds)
        audio = long_recording(run, seconds, os.path.join(args.out, "recording.flac"))
        for backend in BACKENDS:
            cfg = {"backend": backend, "threads": args.threads, "onnx_dir": exported, "run": run, "audio": audio}
            row = {"kind": "transcribe", "model": "demo", "backend": backend, "seconds": seconds,
                   **run_worker(cfg, args.timeout, args.memory_gb)}  # fmt: skip
            if row["status"] == "ok":
                row["rtf"] = round(row["wall_s"] / seconds, 5)
            rows.append(row)
            print(json.dumps(row), flush=True)
        os.remove(audio)
    print(report(rows, args, cer, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
