"""``make demo``: the whole job, small, on the synthetic corpus.

1. synthesizes the espeak-ng corpus with LibriSpeech's layout
   (:mod:`pom.data.synthetic`; skipped when already there);
2. pre-trains a small PoM Conformer with BEST-RQ on all training splits
   (``recipes/LibriSpeech/pretrain/train.py hparams/pretrain/pom.yaml``);
3. fine-tunes it with CTC on train-clean-100 and evaluates dev/test
   (``recipes/LibriSpeech/finetune/train.py hparams/finetune/pom.yaml``);
4. builds a word 4-gram LM from the training transcripts (:mod:`pom.lm`) and
   decodes dev/test again with it (when ``kenlm`` is installed; ``--no-lm``
   skips it);
5. prints the WER/CER tables (``python -m pom.results``);
6. measures time and memory of the demo's PoM encoder against a parameter-matched
   MHA encoder (RelPosMHAXL) from 10 s to 2 minutes of input and plots them
   (:mod:`pom.measure.encoders`; ``--no-efficiency`` skips it), then exports
   the model for SpeechBrain's ``EncoderASR`` and prints where the outputs are.

The small sizes are command-line overrides of the real YAML files
(:data:`MODEL`, :data:`PRETRAIN`, :data:`FINETUNE`), not separate code::

    python -m pom.demo [--out results/demo] [--hours 8] [--compare-random] [--no-lm]

``--mixers pom relposmhaxl summarymixing`` (any registry names) runs the same
pipeline for each mixer on one shared corpus and LM, each encoder
parameter-matched to the demo's PoM (its ``d_model`` chosen so that CNN +
encoder have as many weights, with the small branch sizes of
:data:`DEMO_MIXER_OPTIONS`), and prints the paper's table in miniature: WER and
CER per split with and without the LM, pre-training and fine-tuning time, peak
memory and parameters. Outputs then go to ``<out>/<mixer>/``.

``--compare-random`` also fine-tunes the same model from a random encoder
(same settings and seed), the comparison the test suite makes.

Authors
 * pom-speech contributors 2025
"""

import argparse
import os
import subprocess
import sys
import time

from pom.recipe.files import write_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAIN_SCRIPT = os.path.join(ROOT, "recipes", "LibriSpeech", "pretrain", "train.py")
FINETUNE_SCRIPT = os.path.join(ROOT, "recipes", "LibriSpeech", "finetune", "train.py")
MIXER = "pom"  # the mixer of plain `make demo`

#: Encoder sizes, shared by both stages (a checkpoint only loads into the same sizes).
MODEL = {
    "d_model": 144,
    "num_layers": 4,
    "d_ffn": 576,
    "kernel_size": 15,
    "cnn_channels": "(32,32)",
    "cnn_output_size": 640,
    "dropout": 0.1,
    # Per-utterance normalisation (the paper's recipes: global). On this corpus, whose *-other splits
    # are noisy at 5-20 dB SNR, the global statistics gave 55 % CER on test-other against 44 % per utterance.
    "norm_type": "sentence",
}
#: BEST-RQ pre-training on the CPU: small dynamic batches (many steps), short warm-up.
#: The budgets of both stages keep `make demo` under 20 minutes on a slow 2-core machine
#: (measured on one, 2026-12-03: 0.35 s per pre-training step, 1.3 min per fine-tuning epoch).
PRETRAIN = {
    "precision": "fp32",
    "num_workers": 0,
    "max_batch_len": 30,
    "train_num_buckets": 20,
    "global_batch_seconds": 30,  # = max_batch_len: no gradient accumulation
    "lr": 0.002,
    "warmup_steps": 100,
    "optimizer_step_limit": 500,
    "number_of_epochs": 100,
    "avoid_if_shorter_than": 0.5,
    "ckpt_interval_minutes": 0,
    "log_interval": 50,
}
#: CTC fine-tuning on train-clean-100 (characters), SpeechBrain's augmentation
#: on every batch (augmented copies only: half the compute of clean + augmented).
#: No dropout: with every batch augmented, the small model underfits its 4 epochs
#: (training loss above validation loss), and dropout only slowed it down.
FINETUNE = {
    "precision": "fp32",
    "num_workers": 0,
    "max_batch_len": 20,
    "num_buckets": 10,
    "sorting": "random",
    "lr": 0.002,
    "lr_encoder": 0.001,
    "dnn_neurons": 256,
    "dropout": 0.0,
    "dnn_dropout": 0.0,
    "concat_original": False,
    "number_of_epochs": 4,
    "test_decoding": "beam",
    "beam_size": 10,
    "ckpt_interval_minutes": 0,
}
#: Mixer options at demo size, for mixers whose full-size options are widths
#: (SummaryMixing's branches, HyperMixing's hypernetwork): the ratios of the
#: full-size models to their d_model, at the demo's d_model.
DEMO_MIXER_OPTIONS = {
    "summarymixing": {"local_proj_hid_dim": [128], "local_proj_out_dim": 128, "summary_hid_dim": [256]},
    "hypermixing": {"hypernet_size": 448},
}
#: d_model candidates when parameter-matching another mixer to the demo's PoM
D_MODEL_CANDIDATES = range(48, 321, 8)

#: Test-time decoding with the n-gram LM (alpha and beta chosen on the synthetic dev-clean),
#: on the test splits (:data:`LM_TEST_SPLITS`, unless --finetune gives test_splits).
LM_TEST_SPLITS = "[test-clean, test-other]"
LM = {
    "test_decoding": "beam",
    "beam_size": 15,
    "lm_alpha": 0.5,
    "lm_beta": 1.0,
}
LM_ORDER = 4
DEFAULT_HOURS = 5.0
#: The efficiency plot at the end: encoders alone at the demo's sizes (parameter-matched),
#: one forward of random features per length, each in its own process
#: (pom.measure.encoders; time and peak memory do not depend on the weights).
#: MHA is the paper's MHA baseline, SpeechBrain's Conformer attention (RelPosMHAXL), whose
#: attention scores grow with the square of the length (at 5 min: 58 s and 9 GB against PoM's
#: 0.7 s and 0.7 GB on 2 cores, hence 2 min here).
EFFICIENCY_ENCODERS = ["pom", "relposmhaxl"]
EFFICIENCY_SECONDS = [10, 30, 60, 120]


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
    """``--key=value`` arguments from dicts (later dicts win).

    Example
    -------
    >>> overrides({"lr": 0.1, "d_model": 8}, {"lr": 0.2})
    ['--lr=0.2', '--d_model=8']
    """
    merged = {}
    for d in dicts:
        merged.update(d)
    return [f"--{k}={v}" for k, v in merged.items()]


def run_stage(title, command, threads=1):
    """Runs one stage as a subprocess with ``threads`` CPU threads; returns its
    duration in seconds and its peak resident memory in MiB."""
    print(f"\n=== {title}\n$ OMP_NUM_THREADS={threads} {' '.join(command)}", flush=True)
    start = time.time()
    proc = subprocess.Popen(command, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"Error: '{title}' failed (exit status {proc.returncode})")
    return time.time() - start, usage.ru_maxrss / 1024  # ru_maxrss: KiB on Linux


def encoder_parameters(mixer, model, mixer_options=None):
    """CNN + encoder parameters of ``hparams/pretrain/<mixer>.yaml`` at the demo's
    sizes ``model`` (built on the meta device: no memory)."""
    import tempfile

    import torch

    from pom.parameters import count_parameters
    from pom.recipe.hparams import load_hparams

    changes = dict(model, data_folder=tempfile.gettempdir(), output_folder=tempfile.gettempdir())
    if mixer_options:
        changes["mixer_options"] = mixer_options
    text = "\n".join(f"{k}: {v}" for k, v in changes.items())
    with torch.device("meta"):
        hp = load_hparams(os.path.join(ROOT, "hparams", "pretrain", f"{mixer}.yaml"), text)
    return count_parameters(hp["CNN"], hp["encoder"])


def matched_model(mixer, model, reference=MIXER):
    """The demo's encoder sizes for ``mixer``: ``model`` with the ``d_model``
    (a multiple of 8) whose CNN + encoder parameter count is closest to the
    ``reference`` mixer's at ``model``; returns ``(sizes, mixer options, count)``.

    Example
    -------
    >>> sizes, options, count = matched_model("pom", MODEL)
    >>> sizes["d_model"] == MODEL["d_model"], options
    (True, {})
    """
    options = DEMO_MIXER_OPTIONS.get(mixer, {})
    target = encoder_parameters(reference, model)
    if mixer == reference:
        return dict(model), options, target
    counts = {}
    for d in D_MODEL_CANDIDATES:
        try:
            counts[d] = encoder_parameters(mixer, dict(model, d_model=d), options)
        except ValueError:  # a size the mixer refuses (e.g. RoPE needs an even head size)
            continue
    best = min(counts, key=lambda d: abs(counts[d] - target))
    return dict(model, d_model=best), options, counts[best]


def model_overrides(sizes, options=None):
    """Command-line overrides of an encoder: its ``sizes`` and, if any, its mixer ``options``
    written as one YAML mapping.

    Example
    -------
    >>> model_overrides({"d_model": 176}, {"hypernet_size": 448})
    {'d_model': 176, 'mixer_options': '{hypernet_size: 448}'}
    """
    model = dict(sizes)
    if options:
        model["mixer_options"] = "{" + ", ".join(f"{k}: {v}" for k, v in options.items()) + "}"
    return model


def run_mixer(mixer, args, data, out, sizes, options, lm_path, parse):
    """Pre-trains, fine-tunes (and LM-decodes) one mixer; returns its record."""
    python = sys.executable
    seed = {"seed": 1000 + args.seed}
    model = model_overrides(sizes, options)
    record = {"times_s": {}, "peak_MiB": {}, "runs": []}
    pretrain_dir = os.path.join(out, "pretrain")
    record["times_s"]["pretrain"], record["peak_MiB"]["pretrain"] = run_stage(
        f"BEST-RQ pre-training of a small {mixer} encoder (all training splits)",
        [python, PRETRAIN_SCRIPT, os.path.join(ROOT, "hparams", "pretrain", f"{mixer}.yaml"),
         f"--data_folder={data}", f"--output_folder={pretrain_dir}",
         *overrides(seed, model, PRETRAIN, parse(args.pretrain))],
        args.threads,
    )  # fmt: skip
    runs = [("finetune", pretrain_dir)]
    if args.compare_random:
        runs.append(("finetune_random_init", "none"))
    for name, pretrained in runs:
        command = [
            python, FINETUNE_SCRIPT, os.path.join(ROOT, "hparams", "finetune", f"{mixer}.yaml"),
            f"--data_folder={data}", f"--output_folder={os.path.join(out, name)}", f"--pretrained_path={pretrained}",
        ]  # fmt: skip
        record["times_s"][name], record["peak_MiB"][name] = run_stage(
            f"CTC fine-tuning of {mixer} on train-clean-100 + evaluation ({name}, pretrained_path={pretrained})",
            command + overrides(seed, model, FINETUNE, parse(args.finetune)),
            args.threads,
        )
        record["runs"].append(os.path.join(out, name))
        if name == "finetune" and lm_path:
            lm_overrides = dict(LM, kenlm_model_path=lm_path, results_file=os.path.join(out, name, "results_lm.json"))
            if "test_splits" not in parse(args.finetune):
                lm_overrides["test_splits"] = LM_TEST_SPLITS
            record["times_s"]["lm_decoding"], _ = run_stage(
                f"decoding dev/test again with the LM ({mixer}; training is complete, only the test runs)",
                command + overrides(seed, model, FINETUNE, parse(args.finetune), lm_overrides),
                args.threads,
            )
    record["pretrain_dir"] = pretrain_dir
    return record


def comparison_table(records):
    """The paper's table in miniature: one row per mixer (Markdown)."""
    from pom.results import find_runs

    header = ["mixer", "params (M)", "pre-training (min)", "fine-tuning (min)", "peak memory (MiB)"]
    splits = ("dev-clean", "dev-other", "test-clean", "test-other")
    header += [f"{split} WER / CER" for split in splits] + [
        f"{split} +LM WER" for split in ("test-clean", "test-other")
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for mixer, record in records.items():
        results = dict((("lm" if r.get("lm") else "plain"), r) for _, r in find_runs([record["runs"][0]]))
        plain, lm = results.get("plain", {}).get("splits", {}), results.get("lm", {}).get("splits", {})
        cells = [
            mixer, f"{record['params'] / 1e6:.2f}", f"{record['times_s']['pretrain'] / 60:.1f}",
            f"{record['times_s']['finetune'] / 60:.1f}", f"{max(record['peak_MiB'].values()):.0f}",
        ]  # fmt: skip
        for split in splits:
            m = plain.get(split, {})
            cells.append(f"{m['WER']:.1f} / {m['CER']:.1f}" if m else "-")
        for split in ("test-clean", "test-other"):
            cells.append(f"{lm[split]['WER']:.1f}" if split in lm else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pom.demo", description=__doc__.split("\n\n")[0])
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

    def parse(pairs):
        return dict(pair.split("=", 1) for pair in pairs)

    model = dict(MODEL, **parse(args.model))
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    times = {}
    start = time.time()

    print(f"=== 1/6 synthetic corpus ({args.hours} h, espeak-ng) in {out}/corpus", flush=True)
    from pom.data.synthetic import make_synthetic_librispeech

    t0 = time.time()
    data = make_synthetic_librispeech(os.path.join(out, "corpus"), hours=args.hours, seed=args.seed)
    times["corpus"] = time.time() - t0

    lm_path = None
    if not args.no_lm and lm_available():
        from pom.lm import build_lm

        lm_path = os.path.join(out, "lm", f"{LM_ORDER}-gram.arpa")
        train_splits = ["train-clean-100", "train-clean-360", "train-other-500"]
        print(f"\n=== 2/6 word {LM_ORDER}-gram LM from the training transcripts ({', '.join(train_splits)})")
        t0 = time.time()
        counts = build_lm(data, train_splits, lm_path, order=LM_ORDER)
        print(f"{lm_path}: " + ", ".join(f"{n}-grams {c}" for n, c in counts.items()))
        times["lm"] = time.time() - t0
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
            times[stage if len(args.mixers) == 1 else f"{mixer} {stage}"] = seconds

    from pom.results import find_runs, table_rows, to_csv, to_markdown

    found = find_runs([run for record in records.values() for run in record["runs"]])
    print("\n=== 5/6 results on the synthetic corpus (unseen speakers and sentences)\n")
    for metric in ("WER", "CER"):
        rows = table_rows(found, metric)
        print(f"{metric} (%)\n\n{to_markdown(rows)}\n")
    print(to_csv(table_rows(found, "WER")))
    if len(records) > 1:
        print("The paper's comparison in miniature (parameter-matched encoders, one shared corpus and LM):\n")
        print(comparison_table(records) + "\n")
    efficiency = None
    if not args.no_efficiency:
        t0 = time.time()
        efficiency = run_efficiency(os.path.join(out, "efficiency"), args.efficiency_seconds, args.threads)
        times["efficiency"] = time.time() - t0
    times["total"] = time.time() - start
    summary = {
        "times_s": {k: round(v, 1) for k, v in times.items()}, "hours": args.hours,
        "results": {os.path.relpath(folder, out) + (" +LM" if r.get("lm") else ""): r["splits"] for folder, r in found},
        "mixers": {m: {k: r[k] for k in ("params", "d_model", "mixer_options", "times_s", "peak_MiB")}
                   for m, r in records.items()},
    }  # fmt: skip
    write_json(os.path.join(out, "demo_summary.json"), summary)
    print("Stage times: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in times.items()))
    print(f"Outputs:\n  corpus       {data}")
    for mixer, record in records.items():
        print(f"  pre-training {record['pretrain_dir']}  (pretrained/: the exported encoder)")
        for run in record["runs"]:
            print(
                f"  fine-tuning  {run}  (results.json, wer_<split>.txt, train_log.txt"
                + (", results_lm.json)" if lm_path and run.endswith("finetune") else ")")
            )
    if lm_path:
        print(f"  LM           {lm_path}")
    if efficiency:
        print(f"  efficiency   {efficiency}  (PoM vs MHA: time and memory against length)")
    print(f"  summary      {os.path.join(out, 'demo_summary.json')}")
    some_file = next(
        (
            os.path.join(r, n)
            for r, _, ns in sorted(os.walk(os.path.join(data, "test-clean")))
            for n in sorted(ns)
            if n.endswith(".flac")
        ),
        None,
    )
    if some_file:
        first = next(iter(records.values()))["runs"][0]
        print(f"Transcribe: python -m pom.transcribe --model {first} {some_file}")
    finetune = dict(FINETUNE, **parse(args.finetune))
    decoding = {"decoding": str(finetune.get("test_decoding", "greedy"))}
    if decoding["decoding"] == "beam":
        decoding["beam_size"] = int(finetune["beam_size"])
    for mixer, record in records.items():
        target = os.path.join(out if len(records) == 1 else os.path.join(out, mixer), "exported")
        lines = export_model(record["runs"][0], target, **decoding)
        print(f"\nExported in SpeechBrain's format ({mixer}, python -m pom.export): {target}\n")
        print("\n".join(lines))
    return 0


def run_efficiency(folder, lengths, threads):
    """Step 6: time and memory of the demo's PoM encoder and a parameter-matched MHA
    (RelPosMHAXL) encoder (:data:`MODEL`'s sizes) against input length (``lengths``, seconds),
    each length in its own process (:mod:`pom.measure.encoders`); returns the plot's path, or
    None (with a warning: the trained model is already there) if the measurement failed."""
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
    ``EncoderASR``; returns the three Python lines that load and use it."""
    from pom.export import ExportError, export_run, usage_lines

    try:
        exported, interface = export_run(run, target, decoding=decoding, beam_size=beam_size, overwrite=True)
    except ExportError as err:
        sys.exit(f"Error: exporting {run}: {err}")
    example = next(name for name in sorted(os.listdir(exported)) if name.startswith("example."))
    return usage_lines(interface, exported, example)


if __name__ == "__main__":
    sys.exit(main())
