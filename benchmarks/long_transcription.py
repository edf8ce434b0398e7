"""Long recordings made of a run's test utterances, transcribed in one call: the recordings, the
workers and the rows of ``python -m benchmarks.long_recordings --model RUN``.

Recordings of the given lengths are made by concatenating the run's test
utterances (``RUN/<split>.csv``, in its order, cycled if the split is shorter),
written as 16-bit FLAC and transcribed by ``pom.transcribe`` in one call per
path (:data:`PATHS`): ``whole`` (one pass in bounded pieces,
:meth:`pom.inference.CTCModel.bounded`), ``segments`` (overlapping windows
stitched at the middle of the overlaps) and ``plain`` (the whole file through
the plain pass). Each decoding runs in a fresh process
(:func:`pom.measure.process.measure`: its own peak RSS, a time and a memory
limit); so does the reference, each utterance decoded alone (``utterances``).
The rows hold the wall time of reading and decoding (model loading excluded),
the real-time factor, the peak RSS, WER and CER against the reference
transcripts, and ``dCER`` = the path's CER - the utterance-by-utterance CER.
"""

import csv
import math
import os
import re
import time

from benchmarks import common
from pom.measure import process

#: Transcription paths: pom.transcribe options of each.
PATHS = {
    "whole": {"long_form": "whole", "long_seconds": 0.0},
    "segments": {"long_form": "segments"},
    "plain": {"long_form": "whole", "long_seconds": math.inf},
}


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


def _transcriber(cfg, **options):
    from pom.transcribe import Transcriber

    return Transcriber(cfg["model"], decoding=cfg["decoding"], beam_size=cfg["beam_size"], **options)


def worker_utterances(cfg):
    """Decodes each utterance of ``cfg["audio"]`` alone: the texts and times, the peak RSS."""
    transcriber = _transcriber(cfg)
    texts, times = [], []
    with process.PeakMemory() as memory:
        for path in cfg["audio"]:
            begin = time.perf_counter()
            texts.append(transcriber.transcribe(transcriber.load_audio(path)))
            times.append(time.perf_counter() - begin)
    return {"texts": texts, "times": times, "peak_rss_MiB": round(memory.peak_MiB, 1),
            "extra_rss_MiB": round(memory.extra_MiB, 1)}  # fmt: skip


def worker_transcribe(cfg):
    """Transcribes the recording ``cfg["audio"]`` in one call through path ``cfg["path"]``."""
    options = dict(PATHS[cfg["path"]])
    if cfg["path"] == "segments":
        options.update(segment_seconds=cfg["segment_seconds"], overlap_seconds=cfg["overlap_seconds"])
    transcriber = _transcriber(cfg, **options)
    with process.PeakMemory() as memory:
        [(_, text, error)] = list(transcriber.transcribe_files([cfg["audio"]], batch_size=1, progress=False))
    if error:
        raise RuntimeError(error)
    stats = transcriber.stats
    return {
        "text": text, "wall_s": round(stats["compute_s"], 3), "audio_s": stats["audio_s"],
        "peak_rss_MiB": round(memory.peak_MiB, 1), "extra_rss_MiB": round(memory.extra_MiB, 1),
    }  # fmt: skip


def measure(kind, cfg, args):
    """One transcription measurement (``kind``: ``utterances`` or ``transcribe``) in a fresh process."""
    return process.measure(f"benchmarks.long_transcription:worker_{kind}", cfg, args.threads, args.timeout,
                           args.limit, cwd=common.REPO)  # fmt: skip


def transcription_rows(args, out_dir, log):
    """Builds the recordings, decodes them per path and utterance by utterance; the rows."""
    rows = test_utterances(args.model, args.split, args.data_folder)
    seconds_list = [60.0 * m for m in args.minutes]
    order, counts = recording_plan(rows, seconds_list)
    audio_dir = os.path.join(out_dir, "recordings")
    os.makedirs(audio_dir, exist_ok=True)
    base = dict(model=os.path.abspath(args.model), decoding=args.decoding, beam_size=args.beam_size)
    unique = sorted(set(order[: max(counts)]))
    utt = measure("utterances", {**base, "audio": [rows[i][0] for i in unique]}, args)
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
                cfg = {**base, "path": name, "audio": path,
                       "segment_seconds": args.segment_seconds, "overlap_seconds": args.overlap_seconds}  # fmt: skip
                begin = time.time()
                got = measure("transcribe", cfg, args)
                entry["status"] = got["status"]
                if got["status"] == "ok":
                    wer, cer = error_rates(reference, got["text"])
                    entry.update(wall_s=got["wall_s"], rtf=round(got["wall_s"] / duration, 4), WER=round(wer, 2),
                                 CER=round(cer, 2), peak_rss_MiB=got["peak_rss_MiB"],
                                 extra_rss_MiB=got["extra_rss_MiB"])  # fmt: skip
                    if isinstance(entry["utt_CER"], float):
                        entry["dCER"] = round(cer - entry["utt_CER"], 2)
                elif process.failed(got["status"]):
                    stopped[name] = f"{got['status'].split(':')[0]} at {seconds:g} s"
                log(
                    f"{minutes:g} min {name}: {entry['status']} {entry.get('wall_s', '')} s "
                    f"CER {entry.get('CER', '')} (utterances {entry['utt_CER']}) ({time.time() - begin:.0f} s wall)"
                )
            results.append(entry)
        if not args.keep_audio:
            os.remove(path)
    return results
