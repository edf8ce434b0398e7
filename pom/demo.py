"""``make demo``: the whole job, small, on the synthetic corpus.

1. synthesizes the espeak-ng corpus with LibriSpeech's layout
   (:mod:`pom.data.synthetic`; skipped when already there);
2. pre-trains a small PoM Conformer with BEST-RQ on all training splits
   (``recipes/LibriSpeech/pretrain/train.py hparams/pretrain/pom.yaml``);
3. fine-tunes it with CTC on train-clean-100 and evaluates dev/test
   (``recipes/LibriSpeech/finetune/train.py hparams/finetune/pom.yaml``);
4. prints the WER/CER tables (``python -m pom.results``) and where the outputs are.

The small sizes are command-line overrides of the real YAML files
(:data:`MODEL`, :data:`PRETRAIN`, :data:`FINETUNE`), not separate code::

    python -m pom.demo [--out results/demo] [--hours 3] [--compare-random]

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
    "optimizer_step_limit": 700,
    "number_of_epochs": 100,
    "avoid_if_shorter_than": 0.5,
    "ckpt_interval_minutes": 0,
    "log_interval": 50,
}
#: CTC fine-tuning on train-clean-100 (characters), SpeechBrain's augmentation
#: on every batch (augmented copies only: half the compute of clean + augmented).
FINETUNE = {
    "precision": "fp32",
    "num_workers": 0,
    "max_batch_len": 20,
    "num_buckets": 10,
    "sorting": "random",
    "lr": 0.002,
    "lr_encoder": 0.001,
    "dnn_neurons": 256,
    "concat_original": False,
    "number_of_epochs": 14,
    "test_decoding": "beam",
    "beam_size": 10,
    "ckpt_interval_minutes": 0,
}
DEFAULT_HOURS = 3.0


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
        "--threads", type=int, default=1,
        help="CPU threads per training process (default 1: on a shared or 2-core machine, more threads "
        "oversubscribe the cores and run several times slower)",
    )  # fmt: skip
    parser.add_argument("--compare-random", action="store_true", help="also fine-tune from a random encoder")
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

    print(f"=== 1/4 synthetic corpus ({args.hours} h, espeak-ng) in {out}/corpus", flush=True)
    from pom.data.synthetic import make_synthetic_librispeech

    t0 = time.time()
    data = make_synthetic_librispeech(os.path.join(out, "corpus"), hours=args.hours, seed=args.seed)
    times["corpus"] = time.time() - t0

    seed = {"seed": 1000 + args.seed}
    pretrain_dir = os.path.join(out, "pretrain")
    times["pretrain"] = run_stage(
        "2/4 BEST-RQ pre-training of a small PoM encoder (all training splits)",
        [python, PRETRAIN_SCRIPT, os.path.join(ROOT, "hparams", "pretrain", f"{MIXER}.yaml"),
         f"--data_folder={data}", f"--output_folder={pretrain_dir}",
         *overrides(seed, model, PRETRAIN, parse(args.pretrain))],
        args.threads,
    )  # fmt: skip

    runs = [("finetune", pretrain_dir)]
    if args.compare_random:
        runs.append(("finetune_random_init", "none"))
    for name, pretrained in runs:
        times[name] = run_stage(
            f"3/4 CTC fine-tuning on train-clean-100 + evaluation ({name}, pretrained_path={pretrained})",
            [python, FINETUNE_SCRIPT, os.path.join(ROOT, "hparams", "finetune", f"{MIXER}.yaml"),
             f"--data_folder={data}", f"--output_folder={os.path.join(out, name)}",
             f"--pretrained_path={pretrained}",
             *overrides(seed, model, FINETUNE, parse(args.finetune))],
            args.threads,
        )  # fmt: skip

    from pom.results import find_runs, table_rows, to_csv, to_markdown

    found = find_runs([os.path.join(out, name) for name, _ in runs])
    print("\n=== 4/4 results on the synthetic corpus (unseen speakers and sentences)\n")
    for metric in ("WER", "CER"):
        rows = table_rows(found, metric)
        print(f"{metric} (%)\n\n{to_markdown(rows)}\n")
    print(to_csv(table_rows(found, "WER")))
    times["total"] = time.time() - start
    summary = {"times_s": {k: round(v, 1) for k, v in times.items()}, "hours": args.hours,
               "results": {os.path.basename(folder): r["splits"] for folder, r in found}}  # fmt: skip
    with open(os.path.join(out, "demo_summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    print("Stage times: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in times.items()))
    print(f"Outputs:\n  corpus       {data}\n  pre-training {pretrain_dir}  (pretrained/: the exported encoder)")
    for name, _ in runs:
        print(f"  fine-tuning  {os.path.join(out, name)}  (results.json, wer_<split>.txt, train_log.txt)")
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
