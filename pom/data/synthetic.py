"""A synthetic speech corpus with LibriSpeech's exact layout.

Writes ``<out>/LibriSpeech/<split>/<speaker>/<chapter>/`` folders holding
``<speaker>-<chapter>-<utt>.flac`` (16 kHz mono FLAC) and
``<speaker>-<chapter>.trans.txt`` (upper-case transcripts), for the seven
LibriSpeech split names, plus ``SPEAKERS.TXT`` and a ``SYNTHETIC.json`` record,
so that :mod:`pom.data.librispeech` and every recipe run on it unchanged.

* The plan (speakers, chapters, sentences, voices, SNRs) is drawn in one process
  from the seed (:mod:`pom.data.synthetic_plan`); each utterance is then spoken
  by espeak-ng with noise seeded from (seed, split, index)
  (:mod:`pom.data.espeak`), in parallel with a progress bar: the same files for a
  seed and a size whatever the number of workers.
* A finished corpus with the same options is kept; a half-written one (an
  interrupted run) is replaced; a folder that is not a synthetic corpus is never
  overwritten.

Command line::

    python -m pom.data.synthetic --out DIR [--hours H] [--seed S] [--workers N]

Example
-------
>>> import os, tempfile
>>> root = make_synthetic_librispeech(
...     tempfile.mkdtemp(), hours=0.005, splits=["dev-clean"], progress=False)
>>> os.path.basename(root), sorted(os.listdir(root))[:2]
('LibriSpeech', ['SPEAKERS.TXT', 'SYNTHETIC.json'])

Authors
 * pom-speech contributors 2025
"""

import argparse
import json
import multiprocessing
import os
import shutil
import time

import soundfile as sf
from speechbrain.utils.logger import get_logger

from pom.data.espeak import ESPEAK_MISSING, SAMPLE_RATE, synthesize_utterance
from pom.data.synthetic_plan import (  # noqa: F401 -- load_sentences, is_other: names of this module too
    ALL_SPLITS,
    TINY_HOURS,
    is_other,
    load_sentences,
    plan_corpus,
)

logger = get_logger(__name__)

#: Size the test suite uses (all seven splits, ~5 min of train audio).
TEST_HOURS = 0.1
SYNTH_VERSION = 1
MARKER = "SYNTHETIC.json"
IN_PROGRESS = ".synthetic_in_progress"


def _work(args):
    utt, seed, root = args
    folder = os.path.join(root, utt["split"], str(utt["speaker"]), str(utt["chapter"]))
    path = os.path.join(folder, utt["utt_id"] + ".flac")
    wav = synthesize_utterance(utt, seed)
    sf.write(path, wav, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return len(wav)


def _worker_init():
    import torch

    torch.set_num_threads(1)


def _available_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def make_synthetic_librispeech(out_dir, hours=TINY_HOURS, seed=0, num_workers=None, splits=ALL_SPLITS, progress=True):
    """Writes the synthetic corpus and returns ``<out_dir>/LibriSpeech``.

    Returns at once when a finished corpus with the same options is there.
    A half-written synthetic corpus (interrupted run) is replaced; a
    folder that is not a synthetic corpus is never overwritten.

    Arguments
    ---------
    out_dir : str
        Parent folder; the corpus goes to ``out_dir/LibriSpeech``.
    hours : float
        Total audio over the seven splits (``TINY_HOURS`` by default).
    seed : int
        Random seed: same seed and hours give the same files.
    num_workers : int, optional
        Parallel processes; default: the available cores.
    splits : list of str
        Splits to write, among ``ALL_SPLITS``.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    str
        Path of the LibriSpeech root.
    """
    from tqdm import tqdm

    root = os.path.abspath(os.path.join(out_dir, "LibriSpeech"))
    splits = [s for s in ALL_SPLITS if s in set(splits)]
    options = {
        "version": SYNTH_VERSION,
        "hours": float(hours),
        "seed": int(seed),
        "splits": splits,
    }
    marker = os.path.join(root, MARKER)
    if os.path.isfile(marker) and not os.path.exists(os.path.join(root, IN_PROGRESS)):
        with open(marker, encoding="utf-8") as f:
            if json.load(f).get("options") == options:
                logger.info("Synthetic LibriSpeech already in %s", root)
                return root
    if os.path.isdir(root) and os.listdir(root):
        ours = os.path.exists(marker) or os.path.exists(os.path.join(root, IN_PROGRESS))
        if not ours:
            raise FileExistsError(
                f"{root!r} exists and is not a synthetic corpus made by "
                "pom.data.synthetic; refusing to overwrite it (choose another --out)"
            )
    if shutil.which("espeak-ng") is None:
        raise RuntimeError(ESPEAK_MISSING)

    os.makedirs(root, exist_ok=True)
    open(os.path.join(root, IN_PROGRESS), "w").close()
    if os.path.exists(marker):
        os.remove(marker)
    for split in ALL_SPLITS:
        if os.path.isdir(os.path.join(root, split)):
            shutil.rmtree(os.path.join(root, split))

    t0 = time.time()
    plan = plan_corpus(hours=hours, seed=seed, splits=splits)
    utts = plan["utterances"]
    for u in utts:
        os.makedirs(
            os.path.join(root, u["split"], str(u["speaker"]), str(u["chapter"])),
            exist_ok=True,
        )
    workers = num_workers or _available_cores()
    jobs = [(u, seed, root) for u in utts]
    total_samples = 0
    bar = tqdm(total=len(jobs), desc="synthesizing", unit="utt", disable=not progress)
    if workers <= 1:
        _worker_init()
        for job in jobs:
            total_samples += _work(job)
            bar.update()
    else:
        # forkserver: workers start from a clean process (no inherited
        # threads), whatever the caller (pytest, a recipe) has imported.
        ctx = multiprocessing.get_context("forkserver")
        with ctx.Pool(workers, initializer=_worker_init) as pool:
            for n in pool.imap_unordered(_work, jobs, chunksize=8):
                total_samples += n
                bar.update()
    bar.close()

    by_chapter = {}
    for u in utts:
        key = (u["split"], u["speaker"], u["chapter"])
        by_chapter.setdefault(key, []).append(u)
    for (split, spk, chap), chapter_utts in by_chapter.items():
        path = os.path.join(root, split, str(spk), str(chap), f"{spk}-{chap}.trans.txt")
        with open(path, "w", encoding="utf-8") as f:
            for u in sorted(chapter_utts, key=lambda x: x["utt_id"]):
                f.write(f"{u['utt_id']} {u['wrd']}\n")
    with open(os.path.join(root, "SPEAKERS.TXT"), "w", encoding="utf-8") as f:
        f.write("; Synthetic speakers (espeak-ng voice+variant, pitch, speed)\n")
        f.write(";ID  |SEX| SUBSET           | VOICE\n")
        for s in sorted(plan["speakers"], key=lambda x: x["id"]):
            f.write(
                f"{s['id']:<5}| {s['sex']} | {s['split']:<17}| "
                f"{s['voice']}+{s['variant']} p{s['pitch']} "
                f"s{s['speed'][0]}-{s['speed'][1]}\n"
            )
    elapsed = time.time() - t0
    audio_h = total_samples / SAMPLE_RATE / 3600.0
    info = {
        "options": options,
        "utterances": len(utts),
        "audio_hours": round(audio_h, 4),
        "generation_seconds": round(elapsed, 1),
        "workers": workers,
        "text_source": "WordNet 3.0 usage examples (see pom/data/WORDNET_LICENSE)",
    }
    tmp = marker + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
    os.replace(tmp, marker)
    os.remove(os.path.join(root, IN_PROGRESS))
    logger.info(
        "Synthetic LibriSpeech: %d utterances, %.3f h of audio in %.1f s (%d workers) -> %s",
        len(utts),
        audio_h,
        elapsed,
        workers,
        root,
    )
    return root


def main(argv=None):
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        description="Write a synthetic corpus with LibriSpeech's layout "
        "(espeak-ng speech, WordNet sentences) to OUT/LibriSpeech."
    )
    parser.add_argument("--out", required=True, help="parent folder")
    parser.add_argument(
        "--hours", type=float, default=TINY_HOURS,
        help=f"total hours over the seven splits (default {TINY_HOURS})",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--splits", nargs="+", default=list(ALL_SPLITS), choices=ALL_SPLITS)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    root = make_synthetic_librispeech(
        args.out,
        hours=args.hours,
        seed=args.seed,
        num_workers=args.workers,
        splits=args.splits,
        progress=not args.no_progress,
    )
    with open(os.path.join(root, MARKER), encoding="utf-8") as f:
        info = json.load(f)
    print(
        f"{root}: {info['utterances']} utterances, {info['audio_hours']} h of "
        f"audio, generated in {info['generation_seconds']} s"
    )


if __name__ == "__main__":
    main()
