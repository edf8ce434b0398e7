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
5. prints the WER/CER tables (``python -m pom.results``) and where the outputs are.

The small sizes are command-line overrides of the real YAML files
(:data:`MODEL`, :data:`PRETRAIN`, :data:`FINETUNE`), not separate code::

    python -m pom.demo [--out results/demo] [--hours 8] [--compare-random] [--no-lm]

``--compare-random`` also fine-tunes the same model from a random encoder
(same settings and seed), the comparison the test suite makes.

Authors
 * pom-speech contributors 2025
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAIN_SCRIPT = os.path.join(ROOT, "recipes", "LibriSpeech", "pretrain", "train.py")
FINETUNE_SCRIPT = os.path.join(ROOT, "recipes", "LibriSpeech", "finetune", "train.py")
MIXER = "pom"

#: Encoder sizes, shared by both stages (a checkpoint only loads into the same sizes).
MODEL = {
    "d_model": 144,
    "num_layers": 4,
    "d_ffn": 576,
    "kernel_size": 15,
    "cnn_channels": "(32,32)",
    "cnn_output_size": 640,
    "dropout": 0.1,
}
#: BEST-RQ pre-training on the CPU: small dynamic batches (many steps), short warm-up.
PRETRAIN = {
    "precision": "fp32",
    "num_workers": 0,
    "max_batch_len": 30,
    "train_num_buckets": 20,
    "grad_accumulation_factor": 1,
    "lr": 0.002,
    "warmup_steps": 150,
    "optimizer_step_limit": 1000,
    "number_of_epochs": 100,
    "avoid_if_shorter_than": 0.5,
    "ckpt_interval_minutes": 0,
    "log_interval": 50,
}
#: CTC fine-tuning on train-clean-100 (characters), SpeechBrain's augmentation
#: on every batch (augmented copies only: half the compute of clean + augmented).
#: No dropout: with every batch augmented, the small model underfits its 7 epochs
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
    "number_of_epochs": 7,
    "test_decoding": "beam",
    "beam_size": 10,
    "ckpt_interval_minutes": 0,
}
#: Test-time decoding with the n-gram LM (alpha and beta chosen on the synthetic dev-clean).
LM = {
    "test_decoding": "beam",
    "beam_size": 30,
    "lm_alpha": 0.5,
    "lm_beta": 1.0,
}
LM_ORDER = 4
DEFAULT_HOURS = 8.0


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
    from pom.finetune import missing_lm_packages

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
    duration in seconds."""
    print(f"\n=== {title}\n$ OMP_NUM_THREADS={threads} {' '.join(command)}", flush=True)
    start = time.time()
    result = subprocess.run(command, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
    if result.returncode != 0:
        sys.exit(f"Error: '{title}' failed (exit status {result.returncode})")
    return time.time() - start


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
    parser.add_argument("--compare-random", action="store_true", help="also fine-tune from a random encoder")
    parser.add_argument("--no-lm", action="store_true", help="skip the n-gram LM and the decoding with it")
    parser.add_argument("--pretrain", nargs="*", default=[], metavar="KEY=VALUE", help="extra pre-training overrides")
    parser.add_argument("--finetune", nargs="*", default=[], metavar="KEY=VALUE", help="extra fine-tuning overrides")
    parser.add_argument("--model", nargs="*", default=[], metavar="KEY=VALUE", help="extra encoder-size overrides (both stages)")
    args = parser.parse_args(argv)

    def parse(pairs):
        return dict(pair.split("=", 1) for pair in pairs)

    model = dict(MODEL, **parse(args.model))
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    python = sys.executable
    times = {}
    start = time.time()

    print(f"=== 1/5 synthetic corpus ({args.hours} h, espeak-ng) in {out}/corpus", flush=True)
    from pom.data.synthetic import make_synthetic_librispeech

    t0 = time.time()
    data = make_synthetic_librispeech(os.path.join(out, "corpus"), hours=args.hours, seed=args.seed)
    times["corpus"] = time.time() - t0

    seed = {"seed": 1000 + args.seed}
    pretrain_dir = os.path.join(out, "pretrain")
    times["pretrain"] = run_stage(
        "2/5 BEST-RQ pre-training of a small PoM encoder (all training splits)",
        [python, PRETRAIN_SCRIPT, os.path.join(ROOT, "hparams", "pretrain", f"{MIXER}.yaml"),
         f"--data_folder={data}", f"--output_folder={pretrain_dir}",
         *overrides(seed, model, PRETRAIN, parse(args.pretrain))],
        args.threads,
    )  # fmt: skip

    runs = [("finetune", pretrain_dir)]
    if args.compare_random:
        runs.append(("finetune_random_init", "none"))
    finetune_args = {}
    for name, pretrained in runs:
        finetune_args[name] = [
            python, FINETUNE_SCRIPT, os.path.join(ROOT, "hparams", "finetune", f"{MIXER}.yaml"),
            f"--data_folder={data}", f"--output_folder={os.path.join(out, name)}", f"--pretrained_path={pretrained}",
        ]  # fmt: skip
        times[name] = run_stage(
            f"3/5 CTC fine-tuning on train-clean-100 + evaluation ({name}, pretrained_path={pretrained})",
            finetune_args[name] + overrides(seed, model, FINETUNE, parse(args.finetune)),
            args.threads,
        )

    use_lm = not args.no_lm and lm_available()
    if use_lm:
        from pom.lm import build_lm

        lm_path = os.path.join(out, "lm", f"{LM_ORDER}-gram.arpa")
        train_splits = ["train-clean-100", "train-clean-360", "train-other-500"]
        print(f"\n=== 4/5 word {LM_ORDER}-gram LM from the training transcripts ({', '.join(train_splits)})")
        t0 = time.time()
        counts = build_lm(data, train_splits, lm_path, order=LM_ORDER)
        print(f"{lm_path}: " + ", ".join(f"{n}-grams {c}" for n, c in counts.items()))
        name = runs[0][0]
        lm_overrides = dict(LM, kenlm_model_path=lm_path, results_file=os.path.join(out, name, "results_lm.json"))
        run_stage(
            f"4/5 decoding dev/test again with the LM ({name}; training is complete, only the test runs)",
            finetune_args[name] + overrides(seed, model, FINETUNE, parse(args.finetune), lm_overrides),
            args.threads,
        )
        times["lm"] = time.time() - t0
    elif not args.no_lm:
        print("\n=== 4/5 skipped: no n-gram LM decoding (pip install kenlm pygtrie to enable it)")

    from pom.results import find_runs, table_rows, to_csv, to_markdown

    found = find_runs([os.path.join(out, name) for name, _ in runs])
    print("\n=== 5/5 results on the synthetic corpus (unseen speakers and sentences)\n")
    for metric in ("WER", "CER"):
        rows = table_rows(found, metric)
        print(f"{metric} (%)\n\n{to_markdown(rows)}\n")
    print(to_csv(table_rows(found, "WER")))
    times["total"] = time.time() - start
    summary = {"times_s": {k: round(v, 1) for k, v in times.items()}, "hours": args.hours,
               "results": {os.path.basename(folder) + (" +LM" if r.get("lm") else ""): r["splits"] for folder, r in found}}  # fmt: skip
    with open(os.path.join(out, "demo_summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    print("Stage times: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in times.items()))
    print(f"Outputs:\n  corpus       {data}\n  pre-training {pretrain_dir}  (pretrained/: the exported encoder)")
    for name, _ in runs:
        print(f"  fine-tuning  {os.path.join(out, name)}  (results.json, wer_<split>.txt, train_log.txt)")
    if use_lm:
        print(f"  LM           {lm_path}  (results_lm.json, wer_<split>_lm.txt in {os.path.join(out, runs[0][0])})")
    print(f"  summary      {os.path.join(out, 'demo_summary.json')}")
    some_file = next(
        (os.path.join(r, n) for r, _, ns in sorted(os.walk(os.path.join(data, "test-clean"))) for n in sorted(ns) if n.endswith(".flac")),
        None,
    )
    if some_file:
        print(f"Transcribe: python -m pom.transcribe --model {os.path.join(out, 'finetune')} {some_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
