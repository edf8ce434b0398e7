"""The demo's pipeline: its stages, in order, each a real recipe run with overrides.

:func:`main` runs the steps of :mod:`pom.demo`; :func:`run_mixer` pre-trains, fine-tunes and
LM-decodes one mixer, each stage a subprocess (:func:`run_stage`) whose wall-clock time, CPU time
and peak memory are recorded; :func:`run_efficiency` and :func:`export_model` are the last steps.

Example
-------
>>> overrides({"lr": 0.1, "d_model": 8}, {"lr": 0.2})
['--lr=0.2', '--d_model=8']
"""

import argparse
import os
import resource
import subprocess
import sys
import time

from pom.demo.settings import (
    DEFAULT_HOURS,
    EFFICIENCY_ENCODERS,
    EFFICIENCY_SECONDS,
    FINETUNE,
    FINETUNE_SCRIPT,
    LM,
    LM_ORDER,
    LM_TEST_SPLITS,
    LM_TRAIN_SPLITS,
    MIXER,
    MODEL,
    PRETRAIN,
    PRETRAIN_SCRIPT,
    ROOT,
)


def default_threads(limit=4):
    """CPU threads per training process: the cores this process may use, at most ``limit``
    (the small demo model gains little beyond that)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(limit, cores))


def lm_available():
    """Whether CTC beam search can use an n-gram LM here (``kenlm`` and ``pygtrie`` importable)."""
    from pom.recipe.checks import missing_lm_packages

    return not missing_lm_packages()


def overrides(*dicts):
    """``--key=value`` arguments from dicts (later dicts win; example at the top of this module)."""
    merged = {}
    for d in dicts:
        merged.update(d)
    return [f"--{k}={v}" for k, v in merged.items()]


def cpu_seconds():
    """User + system CPU seconds of this process and of its waited-for children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_stage(title, command, threads=1):
    """Runs one stage as a subprocess with ``threads`` CPU threads; returns its
    duration in seconds, its peak resident memory in MiB and its CPU time in seconds."""
    print(f"\n=== {title}\n$ OMP_NUM_THREADS={threads} {' '.join(command)}", flush=True)
    start = time.time()
    proc = subprocess.Popen(command, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"Error: '{title}' failed (exit status {proc.returncode})")
    # ru_maxrss: KiB on Linux
    return time.time() - start, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def run_mixer(mixer, args, data, out, sizes, options, lm_path, parse):
    """Pre-trains, fine-tunes (and LM-decodes) one mixer; returns its record: wall-clock and
    CPU times and peak memory per stage, the fine-tuning runs and the pre-training folder."""
    from pom.demo.mixers import model_overrides

    python = sys.executable
    seed = {"seed": 1000 + args.seed}
    model = model_overrides(sizes, options)
    record = {"times_s": {}, "cpu_s": {}, "peak_MiB": {}, "runs": []}

    def stage(name, title, command):
        wall, peak, cpu = run_stage(title, command, args.threads)
        record["times_s"][name], record["peak_MiB"][name], record["cpu_s"][name] = wall, peak, cpu

    pretrain_dir = os.path.join(out, "pretrain")
    stage(
        "pretrain",
        f"BEST-RQ pre-training of a small {mixer} encoder (all training splits)",
        [python, PRETRAIN_SCRIPT, os.path.join(ROOT, "hparams", "pretrain", f"{mixer}.yaml"),
         f"--data_folder={data}", f"--output_folder={pretrain_dir}",
         *overrides(seed, model, PRETRAIN, parse(args.pretrain))],
    )  # fmt: skip
    runs = [("finetune", pretrain_dir)]
    if args.compare_random:
        runs.append(("finetune_random_init", "none"))
    for name, pretrained in runs:
        command = [
            python, FINETUNE_SCRIPT, os.path.join(ROOT, "hparams", "finetune", f"{mixer}.yaml"),
            f"--data_folder={data}", f"--output_folder={os.path.join(out, name)}", f"--pretrained_path={pretrained}",
        ]  # fmt: skip
        stage(
            name,
            f"CTC fine-tuning of {mixer} on {parse(args.finetune).get('train_splits', FINETUNE['train_splits'])} "
            f"+ evaluation ({name}, pretrained_path={pretrained})",
            command + overrides(seed, model, FINETUNE, parse(args.finetune)),
        )
        record["runs"].append(os.path.join(out, name))
        if name == "finetune" and lm_path:
            lm_overrides = dict(LM, kenlm_model_path=lm_path, results_file=os.path.join(out, name, "results_lm.json"))
            if "test_splits" not in parse(args.finetune):
                lm_overrides["test_splits"] = LM_TEST_SPLITS
            stage(
                "lm_decoding",
                f"decoding the test splits again with the LM ({mixer}; training is complete, only the test runs)",
                command + overrides(seed, model, FINETUNE, parse(args.finetune), lm_overrides),
            )
    record["pretrain_dir"] = pretrain_dir
    return record


def parse_arguments(argv=None):
    """The command line of ``python -m pom.demo``."""
    from pom import demo

    parser = argparse.ArgumentParser(prog="python -m pom.demo", description=demo.__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "results", "demo"), help="output folder")
    parser.add_argument("--hours", type=float, default=DEFAULT_HOURS, help="size of the synthetic corpus (hours)")
    parser.add_argument("--seed", type=int, default=0, help="corpus and training seed")
    parser.add_argument(
        "--threads", type=int, default=default_threads(),
        help="CPU threads per training process (default: the cores available, at most 4; on a machine "
        "shared with other jobs use fewer, as oversubscribed cores run several times slower)",
    )  # fmt: skip
    parser.add_argument(
        "--mixers", nargs="+", default=[MIXER], metavar="NAME",
        help="mixers to compare (registry names, e.g. pom relposmhaxl summarymixing), each parameter-matched "
        f"to the demo's {MIXER}; default: {MIXER} alone",
    )  # fmt: skip
    parser.add_argument("--compare-random", action="store_true", help="also fine-tune from a random encoder")
    parser.add_argument("--no-lm", action="store_true", help="skip the n-gram LM and the decoding with it")
    parser.add_argument(
        "--no-efficiency", action="store_true", help="skip the PoM vs MHA time and memory plot at the end"
    )
    parser.add_argument(
        "--efficiency_seconds", nargs="+", type=float, default=EFFICIENCY_SECONDS, metavar="S",
        help=f"input lengths of the efficiency plot (default {' '.join(map(str, EFFICIENCY_SECONDS))})",
    )  # fmt: skip
    parser.add_argument("--pretrain", nargs="*", default=[], metavar="KEY=VALUE", help="extra pre-training overrides")
    parser.add_argument("--finetune", nargs="*", default=[], metavar="KEY=VALUE", help="extra fine-tuning overrides")
    parser.add_argument(
        "--model", nargs="*", default=[], metavar="KEY=VALUE", help="extra encoder-size overrides (both stages)"
    )
    args = parser.parse_args(argv)

    from pom.mixers import MIXERS

    unknown = [m for m in args.mixers if m not in MIXERS]
    if unknown:
        parser.error(f"unknown mixer(s) {', '.join(unknown)}; known: {', '.join(sorted(MIXERS))}")
    return args


def main(argv=None):
    """Runs the demo (:mod:`pom.demo`) as the command line ``argv`` says; returns 0."""
    args = parse_arguments(argv)

    def parse(pairs):
        return dict(pair.split("=", 1) for pair in pairs)

    from pom.demo import report
    from pom.demo.mixers import matched_model

    model = dict(MODEL, **parse(args.model))
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    times, cpu_times = {}, {}
    start, start_cpu = time.time(), cpu_seconds()

    print(f"=== 1/6 synthetic corpus ({args.hours:g} h, espeak-ng) in {out}/corpus", flush=True)
    from pom.data.synthetic import make_synthetic_librispeech

    t0 = time.time()
    data = make_synthetic_librispeech(os.path.join(out, "corpus"), hours=args.hours, seed=args.seed)
    times["corpus"] = time.time() - t0  # CPU not measured: the synthesis workers are not our children

    lm_path = None
    if not args.no_lm and lm_available():
        from pom.lm import build_lm

        lm_path = os.path.join(out, "lm", f"{LM_ORDER}-gram.arpa")
        print(f"\n=== 2/6 word {LM_ORDER}-gram LM from the training transcripts ({', '.join(LM_TRAIN_SPLITS)})")
        t0, c0 = time.time(), cpu_seconds()
        counts = build_lm(data, LM_TRAIN_SPLITS, lm_path, order=LM_ORDER)
        print(f"{lm_path}: " + ", ".join(f"{n}-grams {c}" for n, c in counts.items()))
        times["lm"], cpu_times["lm"] = time.time() - t0, cpu_seconds() - c0
    elif not args.no_lm:
        print("\n=== 2/6 no n-gram LM decoding (pip install kenlm pygtrie to enable it)")

    records = {}
    for mixer in args.mixers:
        sizes, options, params = matched_model(mixer, model)
        print(
            f"\n=== 3-4/6 {mixer}: d_model {sizes['d_model']}, CNN + encoder {params / 1e6:.2f} M parameters"
            + (f", mixer options {options}" if options else ""),
            flush=True,
        )
        folder = out if len(args.mixers) == 1 else os.path.join(out, mixer)
        records[mixer] = run_mixer(mixer, args, data, folder, sizes, options, lm_path, parse)
        records[mixer].update(params=params, d_model=int(sizes["d_model"]), mixer_options=options)
        for stage, seconds in records[mixer]["times_s"].items():
            name = stage if len(args.mixers) == 1 else f"{mixer} {stage}"
            times[name], cpu_times[name] = seconds, records[mixer]["cpu_s"][stage]

    from pom.results import find_runs

    found = find_runs([run for record in records.values() for run in record["runs"]])
    report.print_results(found, records)
    efficiency = None
    if not args.no_efficiency:
        t0, c0 = time.time(), cpu_seconds()
        efficiency = run_efficiency(os.path.join(out, "efficiency"), args.efficiency_seconds, args.threads)
        times["efficiency"], cpu_times["efficiency"] = time.time() - t0, cpu_seconds() - c0
    times["total"], cpu_times["total"] = time.time() - start, cpu_seconds() - start_cpu
    summary_path = report.write_summary(out, times, cpu_times, args.hours, found, records)
    print("Stage times (wall clock; CPU: user + system time of the stage's processes, synthesis workers aside)\n")
    print(report.stage_table(times, cpu_times) + "\n")
    report.print_outputs(data, records, lm_path, efficiency, summary_path)
    finetune = dict(FINETUNE, **parse(args.finetune))
    decoding = {"decoding": str(finetune.get("test_decoding", "greedy"))}
    if decoding["decoding"] == "beam":
        decoding["beam_size"] = int(finetune["beam_size"])
    for mixer, record in records.items():
        target = os.path.join(out if len(records) == 1 else os.path.join(out, mixer), "exported")
        lines = export_model(record["runs"][0], target, **decoding)
        print(f"\nExported in SpeechBrain's format ({mixer}, python -m pom.export --onnx): {target}\n")
        print("\n".join(lines))
        print("\nWith ONNX Runtime (no PyTorch):\n\n" + "\n".join(onnx_lines(target)))
    return 0


def run_efficiency(folder, lengths, threads):
    """Step 6: time and memory of the demo's PoM encoder and a parameter-matched MHA
    (RelPosMHAXL) encoder (:data:`MODEL`'s sizes) against input length (``lengths``, seconds),
    each length in its own process (:mod:`pom.measure.encoders`); returns the plot's path, or
    None (with a warning: the trained model is already there) if the measurement failed."""
    from pom.demo.mixers import matched_model, model_overrides
    from pom.measure.encoders import measure_encoders, write_report

    lengths = [int(s) if float(s).is_integer() else s for s in lengths]
    seconds = ", ".join(f"{s / 60:g} min" if s >= 60 else f"{s} s" for s in lengths)
    print(
        f"\n=== 6/6 efficiency: {' vs '.join(EFFICIENCY_ENCODERS)} at the demo's sizes, {seconds} of input", flush=True
    )
    try:
        sizes = {key: value for key, value in MODEL.items() if key != "dropout"}
        models = {name: (name, model_overrides(*matched_model(name, sizes)[:2])) for name in EFFICIENCY_ENCODERS}
        rows = measure_encoders(models, lengths, threads=threads, timeout=300)
        return write_report(rows, folder, "The demo's encoders alone", threads, stem="long_recordings")
    except Exception as err:  # noqa: BLE001 -- the trained model is kept whatever happens here
        print(f"warning: the efficiency measurement failed ({type(err).__name__}: {err}); the trained model is kept")
        return None


def export_model(run, target, decoding="greedy", beam_size=None):
    """Exports the fine-tuning ``run`` to ``target`` (replaced if there) for SpeechBrain's
    ``EncoderASR`` and ONNX Runtime; returns the three Python lines that load and use it."""
    from pom.export import ExportError, export_run, usage_lines

    try:
        exported, interface = export_run(run, target, decoding=decoding, beam_size=beam_size, overwrite=True, onnx=True)
    except ExportError as err:
        sys.exit(f"Error: exporting {run}: {err}")
    example = next(name for name in sorted(os.listdir(exported)) if name.startswith("example."))
    return usage_lines(interface, exported, example)


def onnx_lines(target):
    """How to run the exported ``target``'s ONNX model (:func:`pom.export.onnx.onnx_usage_lines`)."""
    from pom.export.onnx import onnx_usage_lines

    return onnx_usage_lines(target, next(name for name in sorted(os.listdir(target)) if name.startswith("example.")))
