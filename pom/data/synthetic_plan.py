"""The plan of the synthetic corpus: every utterance's speaker, chapter, text and voice, drawn from the seed.

Everything random about the corpus is decided here, in one process, so that it
depends on the seed and the size only (whatever the number of synthesis
workers); :mod:`pom.data.espeak` then speaks each planned utterance and
:mod:`pom.data.synthetic` writes the corpus.

* Speakers: a speaker is a tuple (espeak-ng voice, variant, pitch, speed
  range); every split has its own speakers, so dev/test speakers never appear
  in training, as in LibriSpeech. ``*-other`` splits are harder: faster speech,
  noise at 5-20 dB SNR, extra accents and voice variants.
* Text: real English sentences (the usage examples of WordNet 3.0, ~34k
  sentences with ~27k distinct words, shipped as ``sentences.txt.gz``; see
  ``WORDNET_LICENSE``). Dev and test splits draw their sentences from pools
  kept apart from the training pool.
* Sizes: the audio proportions mimic LibriSpeech (:data:`SPLIT_SHARES`): most
  in the train splits (train-clean-100 < train-clean-360 + train-other-500),
  small dev/test; a split's plan does not depend on which other splits are
  asked for.

Example
-------
>>> plan = plan_corpus(hours=1.0, seed=0)
>>> sorted({u["split"] for u in plan["utterances"]}) == sorted(ALL_SPLITS)
True
>>> plan_corpus(hours=1.0, seed=0, splits=["dev-clean"])["utterances"][0] == next(
...     u for u in plan["utterances"] if u["split"] == "dev-clean")
True

Authors
 * pom-speech contributors 2025
"""

import gzip
import os
import random

from pom.data.librispeech_folders import LIBRISPEECH_SPLITS

ALL_SPLITS = LIBRISPEECH_SPLITS
#: Default total size, in hours, of the command line (about 1 h of audio, ~20 s
#: on 2 cores); ``make demo`` asks for ``pom.demo.settings.DEFAULT_HOURS``.
TINY_HOURS = 1.0
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
