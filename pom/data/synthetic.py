"""A synthetic speech corpus with LibriSpeech's exact layout.

(About 530 lines, one job: speakers, sentences, synthesis, noise and the
LibriSpeech layout are the corpus; split across files they would only be
read together.)

Writes ``<out>/LibriSpeech/<split>/<speaker>/<chapter>/`` folders holding
``<speaker>-<chapter>-<utt>.flac`` (16 kHz mono FLAC) and
``<speaker>-<chapter>.trans.txt`` (upper-case transcripts), for the seven
LibriSpeech split names, so that :mod:`pom.data.librispeech` and every recipe
run on it unchanged.

* Speech: Debian's ``espeak-ng`` synthesizer. A speaker is a tuple
  (voice, variant, pitch, speed range); every split has its own speakers,
  so dev/test speakers never appear in training, as in LibriSpeech.
  ``*-other`` splits are harder: faster speech, noise at 5-20 dB SNR and
  extra accents and voice variants.
* Text: real English sentences (the usage examples of WordNet 3.0, ~34k
  sentences with ~27k distinct words, shipped as ``sentences.txt.gz``; see
  ``WORDNET_LICENSE``). Dev and test splits draw their sentences from pools
  kept apart from the training pool.
* Deterministic for a seed whatever the number of workers: the plan is
  drawn in one process and the noise of each utterance is seeded from
  (seed, split, index). Synthesis runs in parallel with a progress bar.
* Audio proportions mimic LibriSpeech: most in the train splits
  (train-clean-100 < train-clean-360 + train-other-500), small dev/test.

Command line::

    python -m pom.data.synthetic --out DIR [--hours H] [--seed S] [--workers N]

Example
-------
>>> import os, tempfile
>>> root = make_synthetic_librispeech(
...     tempfile.mkdtemp(), hours=0.005, splits=["dev-clean"], progress=False)
>>> os.path.basename(root), sorted(os.listdir(root))[:2]
('LibriSpeech', ['SPEAKERS.TXT', 'SYNTHETIC.json'])
>>> plan = plan_corpus(hours=1.0, seed=0)
>>> sorted({u["split"] for u in plan["utterances"]}) == sorted(ALL_SPLITS)
True

Authors
 * pom-speech contributors 2025
"""

import argparse
import gzip
import json
import multiprocessing
import os
import random
import shutil
import subprocess
import time

import numpy as np
import soundfile as sf
from speechbrain.utils.logger import get_logger

from pom.data.librispeech import LIBRISPEECH_SPLITS

logger = get_logger(__name__)

ALL_SPLITS = LIBRISPEECH_SPLITS
#: Default total size, in hours, of the command line (about 1 h of audio, ~20 s
#: on 2 cores); ``make demo`` asks for ``pom.demo.settings.DEFAULT_HOURS``.
TINY_HOURS = 1.0
#: Size the test suite uses (all seven splits, ~5 min of train audio).
TEST_HOURS = 0.1
SAMPLE_RATE = 16000
SYNTH_VERSION = 1
MARKER = "SYNTHETIC.json"
IN_PROGRESS = ".synthetic_in_progress"
SENTENCE_FILE = os.path.join(os.path.dirname(__file__), "sentences.txt.gz")

#: Share of the total audio per split (sums to 1).
SPLIT_SHARES = {
    "train-clean-100": 0.20,
    "train-clean-360": 0.30,
    "train-other-500": 0.30,
    "dev-clean": 0.05,
    "dev-other": 0.05,
    "test-clean": 0.05,
    "test-other": 0.05,
}
#: Share of the sentences reserved for each dev/test split.
EVAL_TEXT_SHARE = 0.04

# espeak-ng 1.51 English voices and voice variants (Debian bookworm).
CLEAN_VOICES = ("en-us", "en-gb", "en-gb-x-rp", "en-us-nyc", "en-gb-x-gbcwmd")
OTHER_VOICES = CLEAN_VOICES + ("en-gb-scotland", "en-gb-x-gbclan", "en-029")
CLEAN_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8",
    "f1", "f2", "f3", "f4", "f5",
    "adam", "Alex", "Alicia", "Andrea", "Andy", "Annie", "antonio", "aunty",
    "belinda", "benjamin", "boris", "caleb", "david", "Denis", "Diogo", "ed",
    "edward", "edward2", "Gene", "Gene2", "gustave", "Henrique", "Hugo",
    "iven", "iven2", "iven3", "iven4", "Jacky", "john", "kaukovalta", "Lee",
    "linda", "marcelo", "Marco", "Mario", "max", "Michael", "michel",
    "miguel", "Mike", "Mr", "Nguyen", "pablo", "paul", "pedro", "quincy",
    "rob", "robert", "steph", "steph2", "steph3", "travis", "victor", "zac",
    "anika", "norbert", "sandro", "shelby", "grandpa", "grandma",
)  # fmt: skip
OTHER_VARIANTS = CLEAN_VARIANTS + (
    "klatt", "klatt2", "klatt3", "klatt4", "croak", "AnxiousAndy",
    "RicishayMax", "Storm", "Tweaky", "robosoft", "robosoft2", "whisperf",
)  # fmt: skip

FEMALE_VARIANTS = frozenset(
    "f1 f2 f3 f4 f5 Alicia Andrea Annie aunty belinda linda steph steph2 steph3 anika shelby grandma whisperf".split()
)


def is_other(split):
    """True for the harder ``*-other`` splits (and train-other-500)."""
    return "other" in split


def load_sentences(path=SENTENCE_FILE):
    """Returns the list of upper-case English sentences shipped with pom.

    Example
    -------
    >>> sents = load_sentences()
    >>> len(sents) > 30000, sents[0] == sents[0].upper()
    (True, True)
    """
    with gzip.open(path, "rt", encoding="ascii") as f:
        return [line.strip() for line in f if line.strip() and line[0] != "#"]


def plan_corpus(hours=TINY_HOURS, seed=0, splits=ALL_SPLITS):
    """Draws speakers, chapters, texts and voices for every utterance.

    Everything random is decided here, in one process, so that the corpus
    depends on ``seed`` and ``hours`` only.

    Arguments
    ---------
    hours : float
        Total audio over the seven splits (a split's size does not depend
        on which other splits are asked for).
    seed : int
        Random seed.
    splits : list of str
        Split names to plan, among ``ALL_SPLITS``.

    Returns
    -------
    dict
        ``speakers`` (list of dict) and ``utterances`` (list of dict with
        split, path parts, text and synthesis settings).
    """
    unknown = [s for s in splits if s not in SPLIT_SHARES]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; expected among {ALL_SPLITS}")
    if hours <= 0:
        raise ValueError(f"hours must be positive, got {hours}")
    rng = random.Random(f"pom-synthetic-{seed}")
    sentences = load_sentences()
    rng.shuffle(sentences)
    n_eval = int(len(sentences) * EVAL_TEXT_SHARE)
    eval_splits = [s for s in ALL_SPLITS if not s.startswith("train")]
    pools, start = {}, 0
    for split in eval_splits:
        pools[split] = sentences[start : start + n_eval]
        start += n_eval
    train_pool = sentences[start:]
    for split in ALL_SPLITS:
        if split.startswith("train"):
            pools[split] = train_pool  # one cursor shared by the train splits
    cursors = {}

    def next_sentence(split):
        key = "train" if split.startswith("train") else split
        pool = pools[split]
        i = cursors.get(key, 0)
        cursors[key] = i + 1
        return pool[i % len(pool)]

    used_ids, used_chapters, used_voices = set(), set(), set()
    speakers, utterances = [], []
    # Every split is planned (cheaply) so that a split's content does not
    # depend on which splits are asked for; only those asked are kept.
    for split_idx, split in enumerate(ALL_SPLITS):
        target = hours * 3600.0 * SPLIT_SHARES[split]
        train = split.startswith("train")
        other = is_other(split)
        per_spk = 60.0 if train else 20.0
        n_spk = int(min(2000 if train else 40, max(2, round(target / per_spk))))
        split_speakers = []
        for _ in range(n_spk):
            while True:
                voice = rng.choice(OTHER_VOICES if other else CLEAN_VOICES)
                variant = rng.choice(OTHER_VARIANTS if other else CLEAN_VARIANTS)
                pitch = rng.randint(20, 80)
                if (voice, variant, pitch) not in used_voices:
                    used_voices.add((voice, variant, pitch))
                    break
            spk_id = rng.randint(10, 9999)
            while spk_id in used_ids:
                spk_id = rng.randint(10, 9999)
            used_ids.add(spk_id)
            base = rng.uniform(175, 235) if other else rng.uniform(135, 185)
            n_chap = rng.choice((1, 2)) if train else 1
            chapters = []
            for _ in range(n_chap):
                chap = rng.randint(1000, 399999)
                while chap in used_chapters:
                    chap = rng.randint(1000, 399999)
                used_chapters.add(chap)
                chapters.append(chap)
            spk = {
                "id": spk_id,
                "split": split,
                "voice": voice,
                "variant": variant,
                "pitch": pitch,
                "speed": [round(base - 10), round(base + 10)],
                "sex": "F" if variant in FEMALE_VARIANTS else "M",
                "chapters": chapters,
            }
            split_speakers.append(spk)
        share = target / n_spk
        for spk in split_speakers:
            seconds, count = 0.0, 0
            while seconds < share or count < 2:
                n_sent = rng.choices((1, 2, 3), weights=(0.5, 0.35, 0.15))[0]
                texts = [next_sentence(split) for _ in range(n_sent)]
                speed = rng.randint(*spk["speed"])
                n_words = sum(len(t.split()) for t in texts)
                # espeak-ng's rate is ~1.2x its -s words/min, plus ~0.35 s of edges
                seconds += 0.82 * n_words * 60.0 / speed + 0.35
                chapter = spk["chapters"][count % len(spk["chapters"])]
                utt_idx = count // len(spk["chapters"])
                count += 1
                utterances.append(
                    {
                        "split": split,
                        "index": len(utterances),
                        "split_index": split_idx,
                        "speaker": spk["id"],
                        "chapter": chapter,
                        "utt_id": f"{spk['id']}-{chapter}-{utt_idx:04d}",
                        "wrd": " ".join(texts),
                        "say": ". ".join(t.lower() for t in texts) + ".",
                        "voice": f"{spk['voice']}+{spk['variant']}",
                        "pitch": spk["pitch"],
                        "speed": speed,
                        "snr_db": rng.uniform(5, 20) if other else rng.uniform(35, 45),
                        "noise_color": rng.choice(("white", "brown")) if other else "white",
                    }
                )
        speakers.extend(split_speakers)
    keep = set(splits)
    return {
        "speakers": [s for s in speakers if s["split"] in keep],
        "utterances": [u for u in utterances if u["split"] in keep],
    }


def _seed_for(seed, utt):
    return [int(seed), int(utt["split_index"]), int(utt["index"])]


def synthesize_utterance(utt, seed=0):
    """Returns the 16 kHz float32 waveform of one planned utterance.

    Arguments
    ---------
    utt : dict
        One entry of ``plan_corpus(...)["utterances"]``.
    seed : int
        Corpus seed; the noise is seeded from (seed, split, index).

    Returns
    -------
    numpy.ndarray
        Mono float32 samples in [-1, 1].
    """
    cmd = [
        "espeak-ng", "-v", utt["voice"], "-s", str(utt["speed"]),
        "-p", str(utt["pitch"]), "--stdout", utt["say"],
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, check=True)
    except FileNotFoundError as e:
        raise RuntimeError(
            "espeak-ng not found: install it (Debian: apt-get install espeak-ng, "
            "or `make install`) to generate the synthetic corpus"
        ) from e
    wav = _parse_wav(proc.stdout)
    sr = int.from_bytes(proc.stdout[24:28], "little")
    if sr != SAMPLE_RATE:
        wav = _resample(wav, sr, SAMPLE_RATE)
    rng = np.random.default_rng(_seed_for(seed, utt))
    noise = rng.standard_normal(len(wav))
    if utt["noise_color"] == "brown":
        # Integrated (brown) noise, with its drift removed by a 25 ms
        # moving average: a low rumble rather than a hiss.
        noise = np.cumsum(noise)
        csum = np.concatenate(([0.0], np.cumsum(noise)))
        k = 401
        idx = np.arange(len(noise))
        lo, hi = np.maximum(idx - k // 2, 0), np.minimum(idx + k // 2 + 1, len(noise))
        noise = noise - (csum[hi] - csum[lo]) / (hi - lo)
    speech_power = float(np.mean(wav**2)) + 1e-12
    noise_power = float(np.mean(noise**2)) + 1e-12
    gain = np.sqrt(speech_power / (noise_power * 10 ** (utt["snr_db"] / 10)))
    out = wav + gain * noise
    peak = float(np.max(np.abs(out))) + 1e-9
    if peak > 0.99:
        out = out * (0.99 / peak)
    return out.astype(np.float32)


def _parse_wav(data):
    """Reads espeak-ng's streamed 16-bit WAV (its size fields are bogus)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise RuntimeError("espeak-ng did not return a WAV stream")
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if chunk == b"data":
            body = data[pos + 8 :]
            body = body[: len(body) - len(body) % 2]
            return np.frombuffer(body, dtype="<i2").astype(np.float32) / 32768.0
        pos += 8 + size
    raise RuntimeError("espeak-ng WAV stream has no data chunk")


def _resample(wav, orig_sr, new_sr):
    import torch
    import torchaudio.functional as AF

    torch.set_num_threads(1)
    return AF.resample(torch.from_numpy(wav), orig_sr, new_sr).numpy()


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
        raise RuntimeError(
            "espeak-ng not found: install it (Debian: apt-get install espeak-ng, "
            "or `make install`) to generate the synthetic corpus"
        )

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
