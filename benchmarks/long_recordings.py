"""Long recordings in one call: time, memory and accuracy against length, and the encoders alone.

Two measurements, each configuration in its own process (peak RSS, ``VmHWM``, of
that process; ``--threads`` CPU threads; :mod:`pom.measure.process`), a time-out
or out of memory recorded as a result (``timeout``, ``oom``), and the longer
lengths of that configuration then ``skipped``:

* **transcription** with a fine-tuning run (``--model RUN``): recordings of
  ``--minutes`` (default 1, 10, 60) made by concatenating the run's test
  utterances (``RUN/<--split>.csv``), transcribed in one call of
  ``pom.transcribe`` per path (``--paths``): ``whole`` (one pass in bounded
  pieces), ``segments`` (overlapping windows; ``--segment_seconds``,
  ``--overlap_seconds``) and, on request, ``plain`` (the whole file through the
  plain pass); WER, CER and ``dCER`` against decoding the utterances one by one
  (:mod:`benchmarks.long_transcription`).
* **encoders alone** (``--encoders``, default PoM, SummaryMixing (the paper's
  linear competitor), RelPosMHAXL and MHA): the CNN front end + encoder of
  ``hparams/pretrain/<experiment>.yaml`` (full size; ``--encoder_size demo``
  the demo's sizes, each parameter-matched to the demo's PoM as ``pom.demo
  --mixers`` does; ``tiny``; ``--layers``) on random features of
  ``--encoder_seconds`` (30 s to 60 min), one forward without autograd
  through the bounded path and, on request, the plain forward
  (``--encoder_paths bounded plain``; :mod:`pom.measure.encoders`).

Writes ``long_recordings.csv``, ``long_recordings.md`` (tables and the targets,
reported, never asserted) and ``long_recordings.png`` (time and memory against
length, log axes) into ``--out`` (:mod:`benchmarks.long_recordings_report`).
Workers run under a data-size limit (``--memory_limit_gb``, default 85 % of the
memory available at the start), so that running out of memory is an error in
the worker, not the kernel's OOM killer.

Examples (from the repository root)
-----------------------------------
python -m benchmarks.long_recordings --model results/demo/finetune --out benchmarks/runs/long_recordings
python -m benchmarks.long_recordings --model results/demo/finetune --encoder_size demo --out benchmarks/runs/long_demo
python -m benchmarks.long_recordings --model RUN --quick --out /tmp/long   # short lengths, tiny encoders, ~1 min
"""

import argparse
import os
import sys

if __name__ == "__main__" and not __package__:  # run as a file: the package benchmarks is not importable
    sys.exit("run it from the repository root as a module: python -m benchmarks.long_recordings ...")

from benchmarks import common, long_recordings_report, long_transcription  # noqa: E402
from pom.measure import process  # noqa: E402
from pom.measure.encoders import PATHS as ENCODER_PATHS  # noqa: E402
from pom.measure.encoders import measure_encoders  # noqa: E402

DEFAULT_MINUTES = [1, 10, 60]
QUICK_MINUTES = [0.25, 0.5]
DEFAULT_PATHS = ["whole", "segments"]
#: The encoders alone: PoM, the paper's linear competitor (SummaryMixing) and its attention baselines.
ENCODERS = ["pom", "summarymixing", "relposmhaxl", "mha"]
ENCODER_SECONDS = [30, 60, 120, 300, 600, 1200, 1800, 3600]
QUICK_ENCODER_SECONDS = [5, 10]
#: Encoder sizes: overrides of the experiment files (full: none; demo: pom.demo.MODEL).
TINY_SIZE = {"d_model": 64, "num_layers": 1, "d_ffn": 128, "kernel_size": 7, "cnn_channels": "(8,8)",
             "cnn_output_size": 160}  # fmt: skip
#: --quick windows (so that its 15 s and 30 s recordings are cut).
QUICK_SEGMENTS = (8.0, 2.0)


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


def encoder_models(names, size, layers=None):
    """``{name: (experiment, overrides)}`` of benchmark models (:func:`common.model_spec`) at ``size``."""
    models = {}
    for name in names:
        experiment, variant = common.model_spec(name, layers)
        models[name] = (experiment, {**encoder_overrides(name, size), **variant})
    return models


def parse_args(argv=None):
    from pom.runtime import segments as longform

    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", help="fine-tuning output folder (recordings from its test CSV)")
    p.add_argument("--split", default="test-clean", help="the run's test CSV (<split>.csv; default test-clean)")
    p.add_argument("--data_folder", help="where the run's corpus is now ($data_root / its saved data_folder)")
    p.add_argument("--minutes", nargs="+", type=float, help=f"recording lengths (default {DEFAULT_MINUTES})")
    p.add_argument(
        "--paths",
        nargs="+",
        choices=list(long_transcription.PATHS),
        help=f"transcription paths (default {DEFAULT_PATHS})",
    )
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
    args = p.parse_args(argv)
    if args.from_csv:
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
        args.limit = process.default_memory_limit()
    if not args.model and not args.encoders:
        p.error("nothing to measure: give --model RUN and/or --encoders")
    return args


def main(argv=None):
    args = parse_args(argv)
    import torch

    os.makedirs(args.out, exist_ok=True)
    env = common.environment(torch.device("cpu"))
    if args.from_csv:
        rows = long_recordings_report.read_csv(args.from_csv)
        size = "full" if any(r.get("params_M", 0) >= 80 for r in rows if r["kind"] == "encoder") else "small"
        long_recordings_report.plot(
            rows, os.path.join(args.out, "long_recordings.png"), f"{env['device']} | encoders: {size} size"
        )
        print(os.path.join(args.out, "long_recordings.png"))
        return 0

    def log(line):
        print(line, flush=True)

    rows = []
    outputs = {name: os.path.join(args.out, f"long_recordings.{name}") for name in ("csv", "md", "png")}
    if args.model:
        rows += long_transcription.transcription_rows(args, args.out, log)
        long_recordings_report.write_csv(rows, outputs["csv"])
    if args.encoders:
        models = encoder_models(args.encoders, args.encoder_size, args.layers)
        rows += measure_encoders(models, args.encoder_seconds, args.encoder_paths, args.threads, args.timeout,
                                 args.limit, log)  # fmt: skip
    long_recordings_report.write_csv(rows, outputs["csv"])
    with open(outputs["md"], "w", encoding="utf-8") as f:
        f.write(long_recordings_report.markdown(rows, env, args))
    title = f"{env['device']} | {args.threads} threads | encoders: {args.encoder_size} size" + (
        f", {args.layers} layers" if args.layers else ""
    )
    long_recordings_report.plot(rows, outputs["png"], title)
    print(open(outputs["md"], encoding="utf-8").read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
