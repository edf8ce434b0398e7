#!/usr/bin/env python
"""Long recordings in one call: time, memory and accuracy against length, and the encoders alone.

(About 700 lines in one file on purpose: every measurement runs in a fresh process
that re-enters this script (``--worker``), so the recordings, the workers, the
tables, the targets and the plot of one benchmark stay together, in that order.)

Two measurements, each configuration in its own process (peak RSS, ``VmHWM``, of
that process; ``--threads`` CPU threads), a time-out or out of memory recorded as a
result (``timeout``, ``oom``), and the longer lengths of that configuration then
``skipped``:

* **transcription** with a fine-tuning run (``--model RUN``): recordings of
  ``--minutes`` (default 1, 10, 60) made by concatenating the run's test
  utterances (``RUN/<--split>.csv``, in its order, cycled if the split is
  shorter), written as 16-bit FLAC, transcribed in one call of
  ``pom.transcribe`` per path (``--paths``): ``whole`` (one pass in bounded
  pieces, :meth:`pom.inference.CTCModel.bounded`), ``segments`` (overlapping
  windows stitched at the middle of the overlaps; ``--segment_seconds``,
  ``--overlap_seconds``) and, on request, ``plain`` (the whole file through the
  plain pass: the memory without the long-form path). Wall time of reading and decoding
  (model loading excluded), real-time factor, peak RSS of the process, WER and
  CER against the reference transcripts, and the same for decoding the
  utterances one by one (``utterances``: one process, each utterance alone);
  ``dCER`` = the path's CER - the utterance-by-utterance CER (points).
* **encoders alone** (``--encoders``, default ``pom relposmhaxl mha``): the CNN
  front end + encoder of ``hparams/pretrain/<experiment>.yaml`` (full size,
  ``--encoder_size demo`` the demo's sizes, each parameter-matched to the demo's
  PoM as ``pom.demo --mixers`` does, ``tiny``; ``--layers``) on random
  features of ``--encoder_seconds`` (30 s to 60 min), one forward without
  autograd through the bounded path (``bounded``: CNN in pieces, layers in time
  chunks, PoM's chunked op, attention as it is) and, on request, the plain
  forward (``--encoder_paths bounded plain``).

Writes ``long_recordings.csv``, ``long_recordings.md`` (tables and the targets,
reported, never asserted) and ``long_recordings.png`` (time and memory against
length, log axes) into ``--out``. Workers run under a data-size limit
(``--memory_limit_gb``, default 85 % of the memory available at the start), so
that running out of memory is an error in the worker, not the kernel's OOM killer.

Examples
--------
python benchmarks/long_recordings.py --model results/demo/finetune --out benchmarks/runs/long_recordings
python benchmarks/long_recordings.py --model results/demo/finetune --encoder_size demo --out benchmarks/runs/long_demo
python benchmarks/long_recordings.py --model RUN --quick --out /tmp/long   # short lengths, tiny encoders, < 1 min
"""

import argparse
import csv
import json
import math
import os
import re
import resource
import subprocess
import sys
import time

if __name__ == "__main__" and not __package__:  # run as a script: the repo root holds the package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402

DEFAULT_MINUTES = [1, 10, 60]
QUICK_MINUTES = [0.25, 0.5]
#: Transcription paths: pom.transcribe options of each.
PATHS = {
    "whole": {"long_form": "whole", "long_seconds": 0.0},
    "segments": {"long_form": "segments"},
    "plain": {"long_form": "whole", "long_seconds": math.inf},
}
DEFAULT_PATHS = ["whole", "segments"]
ENCODERS = ["pom", "relposmhaxl", "mha"]
ENCODER_SECONDS = [30, 60, 120, 300, 600, 1200, 1800, 3600]
QUICK_ENCODER_SECONDS = [5, 10]
ENCODER_PATHS = ("bounded", "plain")
#: Encoder sizes: overrides of the experiment files (full: none; demo: pom.demo.MODEL).
TINY_SIZE = {"d_model": 64, "num_layers": 1, "d_ffn": 128, "kernel_size": 7, "cnn_channels": "(8,8)",
             "cnn_output_size": 160}  # fmt: skip
#: --quick windows (so that its 15 s and 30 s recordings are cut).
QUICK_SEGMENTS = (8.0, 2.0)
CSV_FIELDS = [
    "kind", "name", "path", "seconds", "status", "wall_s", "rtf", "peak_rss_MiB", "extra_rss_MiB", "WER", "CER",
    "utt_WER", "utt_CER", "dCER", "utterances", "params_M", "source",
]  # fmt: skip


# --------------------------------------------------------------------------- #
# Recordings
# --------------------------------------------------------------------------- #
def run_data_folder(run):
    """The ``data_folder`` a run was made with (its ``hyperparams.yaml``), or None."""
    try:
        with open(os.path.join(run, "hyperparams.yaml"), encoding="utf-8") as f:
            found = re.search(r"^data_folder:\s*(\S+)\s*$", f.read(), flags=re.M)
    except OSError:
        return None
    return found.group(1).strip("'\"") if found else None


def test_utterances(run, split="test-clean", data_folder=None):
    """``[(path, duration_s, words), ...]`` of ``RUN/<split>.csv`` in its order; ``$data_root``
    and the run's data folder are replaced by ``data_folder`` when given."""
    path = os.path.join(run, f"{split}.csv")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist (give a fine-tuning run that tested on {split}, or --split)")
    saved = run_data_folder(run)
    root = data_folder or saved or ""
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            wav = row["wav"].replace("$data_root", root)
            if data_folder and saved and wav.startswith(saved.rstrip("/") + "/"):
                wav = data_folder.rstrip("/") + wav[len(saved.rstrip("/")) :]
            rows.append((wav, float(row["duration"]), " ".join(row["wrd"].split())))
    if not rows:
        raise ValueError(f"{path} holds no utterance")
    missing = [wav for wav, _, _ in rows if not os.path.isfile(wav)]
    if missing:
        raise FileNotFoundError(f"{missing[0]} (and {len(missing) - 1} more) missing: give --data_folder")
    return rows


def recording_plan(rows, seconds_list):
    """``(order, counts)``: utterance indices in recording order (the rows cycled), and for each
    target length the number of first utterances whose durations reach it."""
    longest = max(seconds_list)
    order, total = [], 0.0
    while total < longest:
        index = len(order) % len(rows)
        order.append(index)
        total += rows[index][1]
    counts, cumulative = [], 0.0
    sums = []
    for index in order:
        cumulative += rows[index][1]
        sums.append(cumulative)
    for target in seconds_list:
        counts.append(next(k + 1 for k, value in enumerate(sums) if value >= target))
    return order, counts


def write_recording(rows, order, path):
    """Concatenates the utterances ``order`` (16-bit samples, as read) into a FLAC file; its duration (s)."""
    import numpy as np
    import soundfile as sf

    parts, rate = [], None
    for index in order:
        data, sr = sf.read(rows[index][0], dtype="int16", always_2d=True)
        if rate is not None and sr != rate:
            raise ValueError(f"{rows[index][0]}: {sr} Hz, the recording is {rate} Hz")
        rate = sr
        parts.append(data.mean(axis=1).astype("int16") if data.shape[1] > 1 else data[:, 0])
    audio = np.concatenate(parts)
    sf.write(path, audio, rate, subtype="PCM_16", format="FLAC")
    return len(audio) / rate


def error_rates(reference, hypothesis):
    """``(WER, CER)`` in % of one hypothesis string against one reference string."""
    import jiwer

    if not reference.strip():
        return math.nan, math.nan
    return 100 * jiwer.wer(reference, hypothesis or ""), 100 * jiwer.cer(reference, hypothesis or "")


# --------------------------------------------------------------------------- #
# Workers (one process each)
# --------------------------------------------------------------------------- #
def _rss():
    return {key: common.proc_status_kb(key) / 1024 for key in ("VmRSS", "VmHWM")}


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        pass


def encoder_overrides(name, size):
    """Overrides of benchmark model ``name``'s experiment file for an encoder size: ``full``
    none, ``tiny`` :data:`TINY_SIZE`, ``demo`` the demo's sizes with ``d_model`` parameter-matched
    to the demo's PoM (as ``python -m pom.demo --mixers`` does)."""
    if size == "full":
        return {}
    if size == "tiny":
        return dict(TINY_SIZE)
    from pom.demo import MODEL, matched_model, model_overrides

    experiment, _ = common.model_spec(name)
    sizes, options, _ = matched_model(experiment, {key: value for key, value in MODEL.items() if key != "dropout"})
    return model_overrides(sizes, options)


def build_encoder(name, overrides=None, layers=None):
    """``(model, source)``: CNN + encoder of benchmark model ``name`` (:func:`common.model_spec`)
    with ``overrides`` of its experiment file (:func:`encoder_overrides`)."""
    import tempfile

    from pom.recipe.hparams import load_hparams

    experiment, variant = common.model_spec(name, layers)
    overrides = {**(overrides or {}), **variant}
    with tempfile.TemporaryDirectory(prefix="pom-long-") as tmp:
        hparams = load_hparams(
            os.path.join(common.PRETRAIN_HPARAMS, experiment + ".yaml"),
            {"data_folder": tmp, "output_folder": tmp, **overrides},
        )
    source = f"hparams/pretrain/{experiment}.yaml" + (f" + {overrides}" if overrides else "")
    return common.PretrainEncoder(hparams["CNN"], hparams["encoder"]).eval(), source


def worker_encoder(cfg):
    import torch

    from pom.inference import bounded_encode
    from pom.parameters import count_parameters

    model, source = build_encoder(cfg["name"], cfg["overrides"], cfg.get("layers"))
    torch.manual_seed(0)
    feats = torch.randn(1, int(cfg["seconds"] * common.FRAMES_PER_SECOND), common.N_MELS)
    base = _rss()["VmRSS"]
    _reset_peak()
    begin = time.perf_counter()
    with torch.no_grad():
        if cfg["path"] == "bounded":
            out = bounded_encode(model.cnn, model.encoder, feats)
        else:
            out = model(feats, torch.ones(1))
    wall = time.perf_counter() - begin
    peak = _rss()["VmHWM"]
    return {
        "wall_s": round(wall, 3), "peak_rss_MiB": round(peak, 1), "extra_rss_MiB": round(peak - base, 1),
        "params_M": round(count_parameters(model) / 1e6, 2), "source": source, "frames": int(out.shape[1]),
    }  # fmt: skip


def _transcriber(cfg, **options):
    from pom.transcribe import Transcriber

    return Transcriber(cfg["model"], decoding=cfg["decoding"], beam_size=cfg["beam_size"], **options)


def worker_utterances(cfg):
    transcriber = _transcriber(cfg)
    base = _rss()["VmRSS"]
    _reset_peak()
    texts, times = [], []
    for path in cfg["audio"]:
        begin = time.perf_counter()
        texts.append(transcriber.transcribe(transcriber.load_audio(path)))
        times.append(time.perf_counter() - begin)
    peak = _rss()["VmHWM"]
    return {"texts": texts, "times": times, "peak_rss_MiB": round(peak, 1), "extra_rss_MiB": round(peak - base, 1)}


def worker_transcribe(cfg):
    options = dict(PATHS[cfg["path"]])
    if cfg["path"] == "segments":
        options.update(segment_seconds=cfg["segment_seconds"], overlap_seconds=cfg["overlap_seconds"])
    transcriber = _transcriber(cfg, **options)
    base = _rss()["VmRSS"]
    _reset_peak()
    [(_, text, error)] = list(transcriber.transcribe_files([cfg["audio"]], batch_size=1, progress=False))
    if error:
        raise RuntimeError(error)
    peak = _rss()["VmHWM"]
    stats = transcriber.stats
    return {
        "text": text, "wall_s": round(stats["compute_s"], 3), "audio_s": stats["audio_s"],
        "peak_rss_MiB": round(peak, 1), "extra_rss_MiB": round(peak - base, 1),
    }  # fmt: skip


WORKERS = {"encoder": worker_encoder, "utterances": worker_utterances, "transcribe": worker_transcribe}


def run_worker(cfg):
    """Runs one measurement in this process; ``{"status": "ok", ...}`` or the failure as a status."""
    import torch

    torch.set_num_threads(cfg["threads"])
    try:
        return {"status": "ok", **WORKERS[cfg["kind"]](cfg)}
    except MemoryError:
        return {"status": "oom"}
    except Exception as err:  # noqa: BLE001 -- every failure is a recorded result
        if common.is_oom(err):
            return {"status": "oom"}
        return {"status": f"error: {type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"}


def _limit_memory(limit_bytes):
    def apply():
        if limit_bytes:
            resource.setrlimit(resource.RLIMIT_DATA, (limit_bytes, limit_bytes))
        os.setpgrp()

    return apply


def measure(cfg, timeout, limit_bytes):
    """One measurement in a fresh process (its own peak RSS), killed after ``timeout`` seconds."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(cfg)]
    env = dict(os.environ, OMP_NUM_THREADS=str(cfg["threads"]))
    proc = subprocess.Popen(
        cmd, cwd=common.REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=_limit_memory(limit_bytes),
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.communicate()
        return {"status": "timeout"}
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    if proc.returncode in (-9, 137):
        return {"status": "oom"}
    last = (err.strip().splitlines() or [""])[-1][:160]
    if "can't allocate memory" in err.lower() or "memoryerror" in err.lower():
        return {"status": "oom"}
    return {"status": f"error: exit {proc.returncode}: {last}"}


def available_memory_bytes():
    """``MemAvailable`` of ``/proc/meminfo`` in bytes (None if unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# --------------------------------------------------------------------------- #
# Runs
# --------------------------------------------------------------------------- #
def failed(status):
    return status in ("oom", "timeout") or status.startswith("error")


def transcription_rows(args, out_dir, log):
    """Builds the recordings, decodes them per path and utterance by utterance; the rows."""
    rows = test_utterances(args.model, args.split, args.data_folder)
    seconds_list = [60.0 * m for m in args.minutes]
    order, counts = recording_plan(rows, seconds_list)
    audio_dir = os.path.join(out_dir, "recordings")
    os.makedirs(audio_dir, exist_ok=True)
    base = dict(model=os.path.abspath(args.model), decoding=args.decoding, beam_size=args.beam_size,
                threads=args.threads)  # fmt: skip
    unique = sorted(set(order[: max(counts)]))
    utt = measure({**base, "kind": "utterances", "audio": [rows[i][0] for i in unique]}, args.timeout, args.limit)
    texts = dict(zip(unique, utt.get("texts", [])))
    times = dict(zip(unique, utt.get("times", [])))
    log(f"utterances: {utt['status']} ({len(unique)} decoded one by one)")
    results, stopped = [], {}
    for minutes, seconds, count in zip(args.minutes, seconds_list, counts):
        indices = order[:count]
        reference = " ".join(rows[i][2] for i in indices)
        path = os.path.join(audio_dir, f"recording_{minutes:g}min.flac")
        duration = write_recording(rows, indices, path)
        row = {"kind": "transcribe", "name": os.path.basename(os.path.normpath(args.model)), "seconds": seconds,
               "utterances": count, "path": "utterances", "status": utt["status"]}  # fmt: skip
        if utt["status"] == "ok":
            hypothesis = " ".join(texts[i] for i in indices)
            wall = sum(times[i] for i in indices)
            wer, cer = error_rates(reference, hypothesis)
            row.update(wall_s=round(wall, 3), rtf=round(wall / duration, 4), peak_rss_MiB=utt["peak_rss_MiB"],
                       extra_rss_MiB=utt["extra_rss_MiB"], WER=round(wer, 2), CER=round(cer, 2))  # fmt: skip
        results.append(row)
        for name in args.paths:
            entry = {**row, "path": name, "WER": "", "CER": "", "wall_s": "", "rtf": "", "peak_rss_MiB": "",
                     "extra_rss_MiB": "", "utt_WER": row.get("WER", ""), "utt_CER": row.get("CER", "")}  # fmt: skip
            if name in stopped:
                entry["status"] = f"skipped ({stopped[name]})"
            else:
                cfg = {**base, "kind": "transcribe", "path": name, "audio": path,
                       "segment_seconds": args.segment_seconds, "overlap_seconds": args.overlap_seconds}  # fmt: skip
                begin = time.time()
                got = measure(cfg, args.timeout, args.limit)
                entry["status"] = got["status"]
                if got["status"] == "ok":
                    wer, cer = error_rates(reference, got["text"])
                    entry.update(wall_s=got["wall_s"], rtf=round(got["wall_s"] / duration, 4), WER=round(wer, 2),
                                 CER=round(cer, 2), peak_rss_MiB=got["peak_rss_MiB"],
                                 extra_rss_MiB=got["extra_rss_MiB"])  # fmt: skip
                    if isinstance(entry["utt_CER"], float):
                        entry["dCER"] = round(cer - entry["utt_CER"], 2)
                elif failed(got["status"]):
                    stopped[name] = f"{got['status'].split(':')[0]} at {seconds:g} s"
                log(
                    f"{minutes:g} min {name}: {entry['status']} {entry.get('wall_s', '')} s "
                    f"CER {entry.get('CER', '')} (utterances {entry['utt_CER']}) ({time.time() - begin:.0f} s wall)"
                )
            results.append(entry)
        if not args.keep_audio:
            os.remove(path)
    return results


def encoder_rows(args, log):
    results, stopped = [], {}
    for name in args.encoders:
        overrides = encoder_overrides(name, args.encoder_size)
        for path in args.encoder_paths:
            for seconds in args.encoder_seconds:
                row = {"kind": "encoder", "name": name, "path": path, "seconds": seconds}
                key = (name, path)
                if key in stopped:
                    row["status"] = f"skipped ({stopped[key]})"
                    results.append(row)
                    continue
                cfg = {"kind": "encoder", "name": name, "path": path, "seconds": seconds, "overrides": overrides,
                       "layers": args.layers, "threads": args.threads}  # fmt: skip
                begin = time.time()
                got = measure(cfg, args.timeout, args.limit)
                row["status"] = got["status"]
                if got["status"] == "ok":
                    row.update({k: got[k] for k in ("wall_s", "peak_rss_MiB", "extra_rss_MiB", "params_M", "source")})
                    row["rtf"] = round(got["wall_s"] / seconds, 4)
                elif failed(got["status"]):
                    stopped[key] = f"{got['status'].split(':')[0]} at {seconds:g} s"
                log(
                    f"encoder {name} {path} {seconds} s: {row['status']} {row.get('wall_s', '')} s "
                    f"{row.get('peak_rss_MiB', '')} MiB ({time.time() - begin:.0f} s wall)"
                )
                results.append(row)
    return results


# --------------------------------------------------------------------------- #
# Outputs
# --------------------------------------------------------------------------- #
def read_csv(path):
    """Rows of a ``long_recordings.csv``, numbers parsed (for ``--from-csv``)."""
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key not in ("kind", "name", "path", "status", "source") and value not in (None, ""):
                    row[key] = float(value)
            rows.append(row)
    return rows


def write_csv(rows, path):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: row.get(key, "") for key in CSV_FIELDS})


def _length(seconds):
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def _num(value, fmt):
    return format(value, fmt) if isinstance(value, (int, float)) and not math.isnan(value) else "-"


def transcription_table(rows):
    rows = [r for r in rows if r["kind"] == "transcribe"]
    if not rows:
        return ""
    lines = ["| length | path | status | time (s) | RTF | peak RSS (MiB) | WER | CER | dCER (points) |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {_length(r['seconds'])} | {r['path']} | {r['status']} | {_num(r.get('wall_s'), '.1f')} | "
            f"{_num(r.get('rtf'), '.3f')} | {_num(r.get('peak_rss_MiB'), '.0f')} | {_num(r.get('WER'), '.2f')} | "
            f"{_num(r.get('CER'), '.2f')} | {_num(r.get('dCER'), '+.2f')} |"
        )
    return "\n".join(lines)


def encoder_table(rows):
    rows = [r for r in rows if r["kind"] == "encoder"]
    if not rows:
        return ""
    seconds = sorted({r["seconds"] for r in rows})
    lines = [
        "| encoder | path | " + " | ".join(_length(s) for s in seconds) + " |",
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
                cells.append(f"{r['wall_s']:.1f} s, {r['peak_rss_MiB']:.0f} MiB")
        lines.append(f"| {name} | {path} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(rows, encoder_size="full"):
    """The targets, reported (never asserted): ``[(target, measured, verdict), ...]``; those of the
    ~95 M PoM encoder only when the encoders were measured at full size."""

    def longest(kind, name=None, path=None):
        mine = [r for r in rows if r["kind"] == kind and (name is None or r["name"] == name) and r["path"] == path]
        return max(mine, key=lambda r: r["seconds"]) if mine else None

    out = []
    for path in ("whole", "segments"):
        r = longest("transcribe", path=path)
        if r is None:
            continue
        what = f"{_length(r['seconds'])}, {path}: {r['status']}"
        if r["status"] == "ok":
            what += f", peak RSS {r['peak_rss_MiB'] / 1024:.2f} GiB"
            verdict = "met" if r["seconds"] >= 3600 and r["peak_rss_MiB"] < 2048 else "not met"
            if r["seconds"] < 3600:
                verdict = "not measured at 60 min"
        else:
            verdict = "not met"
        out.append(("60 min in one call, peak RSS < 2 GB (demo model)", what, verdict))
    r = longest("encoder", "pom", "bounded")
    if r is not None and encoder_size == "full":
        ok = r["status"] == "ok"
        size = f"{r.get('params_M', '?')} M" if ok else "?"
        what = f"{_length(r['seconds'])} ({size}): " + (
            f"peak RSS {r['peak_rss_MiB'] / 1024:.2f} GiB, RTF {r['rtf']:.3f}" if ok else r["status"]
        )
        full = ok and r["seconds"] >= 3600 and r.get("params_M", 0) >= 80
        out.append(
            (
                "PoM encoder (~95 M), 60 min: peak RSS < 4 GB",
                what,
                ("met" if r["peak_rss_MiB"] < 4096 else "not met") if full else "not measured at full size",
            )
        )
        out.append(("PoM encoder (~95 M), 60 min: RTF < 0.1", what,
                    ("met" if r["rtf"] < 0.1 else "not met") if full else "not measured at full size"))  # fmt: skip
    for path in ("whole", "segments"):
        mine = [r for r in rows if r["kind"] == "transcribe" and r["path"] == path and r["status"] == "ok"]
        if mine:
            worst = max(mine, key=lambda r: r.get("dCER", -math.inf) if r.get("dCER", "") != "" else -math.inf)
            dcer = worst.get("dCER", "")
            what = ", ".join(f"{_length(r['seconds'])} {_num(r.get('dCER'), '+.2f')}" for r in mine)
            verdict = "not measured" if dcer == "" else ("met" if dcer <= 2.0 else "not met")
            out.append((f"{path}: CER within 2 points of utterance-by-utterance decoding", what, verdict))
    return out


def markdown(rows, env, args):
    lines = [
        "# Long recordings",
        "",
        common.environment_line(env) + f"; {args.threads} threads",
        "",
        f"command: `{env['command']}`",
        "",
    ]
    table = transcription_table(rows)
    if table:
        lines += [
            f"## Transcription: `{args.model}`, {args.split} utterances concatenated, {args.decoding} decoding",
            "",
            f"segments: {args.segment_seconds:g} s windows, >= {args.overlap_seconds:g} s overlap; time = reading "
            "and decoding (model loading excluded); peak RSS of the process; dCER = CER - the utterance-by-utterance "
            "CER (`utterances`: each utterance decoded alone, times summed)",
            "",
            table,
            "",
        ]
    table = encoder_table(rows)
    if table:
        sources = list(dict.fromkeys(f"{r['name']}: {r['source']} ({r['params_M']} M)" for r in rows
                                     if r["kind"] == "encoder" and r.get("source")))  # fmt: skip
        lines += [
            f"## Encoders alone ({args.encoder_size} size), one forward without autograd, batch 1",
            "",
            "time, peak RSS of the process; bounded = CNN in pieces, layers in time chunks (pom.inference); "
            "plain = the module's forward",
            "",
            table,
            "",
            "models: " + "; ".join(sources),
            "",
        ]
    judged = targets(rows, args.encoder_size)
    if judged:
        lines += ["## Targets (reported, not asserted)", "", "| target | measured | verdict |", "|---|---|---|"]
        lines += [f"| {t} | {m} | {v} |" for t, m, v in judged]
    return "\n".join(lines) + "\n"


def plot(rows, path, title):
    """Time and memory against length (log axes): transcription paths (peak RSS of the process),
    then the encoders (peak RSS minus the RSS before the forward: the activations)."""
    from matplotlib import ticker

    groups = [("transcribe", "transcription (one call)"), ("encoder", "encoders alone")]
    groups = [(kind, label) for kind, label in groups if any(r["kind"] == kind for r in rows)]
    fig, axes = common.figure(len(groups) or 1)
    for i, (kind, label) in enumerate(groups):
        mine = [r for r in rows if r["kind"] == kind]
        series = list(dict.fromkeys((r["name"], r["path"]) for r in mine))
        memory = ("peak_rss_MiB", "peak RSS (MiB)")
        if kind == "encoder":  # what the forward adds to the process (imports and weights excluded)
            memory = ("extra_rss_MiB", "memory of the forward (MiB)")
        for j, (key, ylabel) in enumerate([("wall_s", "time (s)"), memory]):
            ax = axes[i][j]
            for k, (name, route) in enumerate(series):
                points = sorted(
                    (r for r in mine if (r["name"], r["path"]) == (name, route)), key=lambda r: r["seconds"]
                )
                common.draw_series(ax, points, key, route if kind == "transcribe" else f"{name} ({route})", k)
            ax.set_xscale("log")
            ax.set_yscale("log")
            lengths = sorted({r["seconds"] for r in mine})
            ax.set_xticks(lengths, [_length(v) for v in lengths])
            if len(lengths) > 6:
                ax.tick_params(axis="x", labelrotation=35)
            ax.margins(y=0.12)  # room for the failures' labels
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
            ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
            ax.yaxis.set_minor_formatter(ticker.NullFormatter())
            ax.set_xlabel("recording length" if kind == "transcribe" else "input length (random features)")
            ax.set_ylabel(ylabel)
            ax.set_title(label)
            ax.grid(alpha=0.3, which="both")
        axes[i][0].legend(fontsize=8)
    common.save_figure(fig, path, title)


# --------------------------------------------------------------------------- #
# Main
# --------------------------------------------------------------------------- #
def parse_args(argv=None):
    from pom.runtime import segments as longform

    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", help="fine-tuning output folder (recordings from its test CSV)")
    p.add_argument("--split", default="test-clean", help="the run's test CSV (<split>.csv; default test-clean)")
    p.add_argument("--data_folder", help="where the run's corpus is now ($data_root / its saved data_folder)")
    p.add_argument("--minutes", nargs="+", type=float, help=f"recording lengths (default {DEFAULT_MINUTES})")
    p.add_argument("--paths", nargs="+", choices=list(PATHS), help=f"transcription paths (default {DEFAULT_PATHS})")
    p.add_argument("--segment_seconds", type=float, help=f"segments: window (default {longform.SEGMENT_SECONDS:g})")
    p.add_argument("--overlap_seconds", type=float, help=f"segments: overlap (default {longform.OVERLAP_SECONDS:g})")
    p.add_argument("--decoding", choices=("greedy", "beam"), default="greedy", help="CTC decoding (default greedy)")
    p.add_argument("--beam_size", type=int, default=10, help="beam size with --decoding beam")
    p.add_argument("--encoders", nargs="*", help=f"benchmark models, encoders alone (default {ENCODERS}; none: skip)")
    p.add_argument("--encoder_paths", nargs="+", choices=ENCODER_PATHS, help="bounded (default) and/or plain")
    p.add_argument(
        "--encoder_seconds", nargs="+", type=float, help=f"encoder input lengths (default {ENCODER_SECONDS})"
    )
    p.add_argument("--encoder_size", choices=("full", "demo", "tiny"), help="encoder sizes (default full)")
    p.add_argument("--layers", type=int, help="override num_layers of the encoders")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads per measurement")
    p.add_argument("--timeout", type=int, help="seconds per measurement (default 1800, --quick 120)")
    p.add_argument("--memory_limit_gb", type=float, help="data-size limit of a worker (default 85%% of available)")
    p.add_argument("--keep_audio", action="store_true", help="keep the recordings (FLAC) under --out/recordings")
    p.add_argument("--quick", action="store_true", help="15 s and 30 s recordings, 8 s windows, tiny encoders, 5-10 s")
    p.add_argument("--out", default=os.path.join(common.REPO, "benchmarks", "out", "long_recordings"))
    p.add_argument("--from-csv", help="no measurement: redraw the plot of a long_recordings.csv into --out")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker or args.from_csv:
        return args
    quick = args.quick
    args.minutes = args.minutes or (QUICK_MINUTES if quick else DEFAULT_MINUTES)
    args.paths = args.paths or list(DEFAULT_PATHS)
    args.segment_seconds = args.segment_seconds or (QUICK_SEGMENTS[0] if quick else longform.SEGMENT_SECONDS)
    if args.overlap_seconds is None:
        args.overlap_seconds = QUICK_SEGMENTS[1] if quick else longform.OVERLAP_SECONDS
    args.encoders = ENCODERS if args.encoders is None else args.encoders
    args.encoder_paths = args.encoder_paths or ["bounded"]
    args.encoder_seconds = args.encoder_seconds or (QUICK_ENCODER_SECONDS if quick else ENCODER_SECONDS)
    args.encoder_seconds = [int(s) if float(s).is_integer() else s for s in args.encoder_seconds]
    args.encoder_size = args.encoder_size or ("tiny" if quick else "full")
    args.timeout = args.timeout or (120 if quick else 1800)
    unknown = [m for m in args.encoders if m not in common.model_names()]
    if unknown:
        p.error(f"unknown encoders {unknown}; known: {', '.join(common.model_names())}")
    if not 0 <= args.overlap_seconds < args.segment_seconds:
        p.error("--overlap_seconds must be >= 0 and below --segment_seconds")
    if args.memory_limit_gb is not None:
        args.limit = int(args.memory_limit_gb * 2**30) if args.memory_limit_gb > 0 else None
    else:
        available = available_memory_bytes()
        args.limit = int(0.85 * available) if available else None
    if not args.model and not args.encoders:
        p.error("nothing to measure: give --model RUN and/or --encoders")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(run_worker(json.loads(args.worker))), flush=True)
        return 0
    import torch

    os.makedirs(args.out, exist_ok=True)
    env = common.environment(torch.device("cpu"))
    if args.from_csv:
        rows = read_csv(args.from_csv)
        size = "full" if any(r.get("params_M", 0) >= 80 for r in rows if r["kind"] == "encoder") else "small"
        plot(rows, os.path.join(args.out, "long_recordings.png"), f"{env['device']} | encoders: {size} size")
        print(os.path.join(args.out, "long_recordings.png"))
        return 0

    def log(line):
        print(line, flush=True)

    rows = []
    outputs = {name: os.path.join(args.out, f"long_recordings.{name}") for name in ("csv", "md", "png")}
    if args.model:
        rows += transcription_rows(args, args.out, log)
        write_csv(rows, outputs["csv"])
    if args.encoders:
        rows += encoder_rows(args, log)
    write_csv(rows, outputs["csv"])
    with open(outputs["md"], "w", encoding="utf-8") as f:
        f.write(markdown(rows, env, args))
    title = f"{env['device']} | {args.threads} threads | encoders: {args.encoder_size} size" + (
        f", {args.layers} layers" if args.layers else ""
    )
    plot(rows, outputs["png"], title)
    print(open(outputs["md"], encoding="utf-8").read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
