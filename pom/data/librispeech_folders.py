"""LibriSpeech split folders read and checked: every transcript line against the audio files.

A split folder holds ``<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`` (one
``<utterance-id> WORDS ...`` line per utterance) beside the
``<speaker>-<chapter>-<utt>.flac`` files, as unpacked from the official archives
(or written by :mod:`pom.data.synthetic`). :func:`collect_split` returns one row
per utterance, its duration read from the audio header (no decoding); every
mismatch (a transcript line without audio, audio without a transcript line, an
unreadable or empty audio file, a malformed line) is named in one error, or with
``on_error="skip"`` left out and counted in the log. :func:`check_librispeech_folders`
says what is missing from a LibriSpeech root and what is there instead.

Example
-------
>>> import os, tempfile, numpy as np, soundfile as sf
>>> split = os.path.join(tempfile.mkdtemp(), "dev-clean")
>>> os.makedirs(os.path.join(split, "84", "121123"))
>>> sf.write(os.path.join(split, "84", "121123", "84-121123-0000.flac"), np.zeros(8000, dtype="int16"), 16000)
>>> with open(os.path.join(split, "84", "121123", "84-121123.trans.txt"), "w") as f:
...     _ = f.write("84-121123-0000 GO DO YOU HEAR\\n")
>>> [(r["ID"], r["duration"], r["spk_id"], r["wrd"]) for r in collect_split(split)]
[('84-121123-0000', 0.5, '84-121123', 'GO DO YOU HEAR')]

Authors
 * pom-speech contributors 2025
"""

import glob
import os
from concurrent.futures import ThreadPoolExecutor

import soundfile as sf
from speechbrain.utils.logger import get_logger

logger = get_logger(__name__)

LIBRISPEECH_SPLITS = (
    "train-clean-100",
    "train-clean-360",
    "train-other-500",
    "dev-clean",
    "dev-other",
    "test-clean",
    "test-other",
)
AUDIO_EXT = ".flac"
TRANS_SUFFIX = ".trans.txt"


class LibriSpeechFormatError(ValueError):
    """Raised when a LibriSpeech split holds inconsistent or bad files."""


def check_librispeech_folders(data_folder, splits):
    """Raises FileNotFoundError naming what is missing and what is present.

    Arguments
    ---------
    data_folder : str
        The LibriSpeech root.
    splits : list of str
        Split folder names that must exist inside it.
    """
    if not os.path.isdir(data_folder):
        raise FileNotFoundError(
            f"LibriSpeech data_folder {data_folder!r} does not exist or is not a "
            "folder; expected a LibriSpeech root holding split folders such as "
            f"{', '.join(LIBRISPEECH_SPLITS)}"
        )
    missing = [s for s in splits if not os.path.isdir(os.path.join(data_folder, s))]
    if missing:
        present = sorted(d for d in os.listdir(data_folder) if os.path.isdir(os.path.join(data_folder, d)))
        hint = ""
        if "LibriSpeech" in present:
            hint = f" (it holds a LibriSpeech folder: did you mean {os.path.join(data_folder, 'LibriSpeech')!r}?)"
        raise FileNotFoundError(
            f"LibriSpeech split folder(s) {', '.join(missing)} not found in "
            f"{data_folder!r}: expected "
            + ", ".join(repr(os.path.join(data_folder, s)) for s in missing)
            + f"; folders present there: {', '.join(present) or 'none'}{hint}"
        )


def collect_split(split_folder, on_error="raise"):
    """Returns the rows of one split, checking transcripts against audio.

    Arguments
    ---------
    split_folder : str
        ``<root>/<split>``, holding ``<speaker>/<chapter>/`` folders.
    on_error : str
        ``"raise"`` or ``"skip"``, see :func:`prepare_librispeech`.

    Returns
    -------
    list of dict
        Keys ``ID, duration, wav, spk_id, wrd``, sorted by ID; ``spk_id`` is
        ``<speaker>-<chapter>`` as in SpeechBrain's LibriSpeech recipes.
    """
    problems = []  # (kind, message)
    entries = []  # (utt_id, wav_path, words)
    transcribed = set()
    trans_files = sorted(glob.glob(os.path.join(split_folder, "*", "*", "*" + TRANS_SUFFIX)))
    for trans in trans_files:
        chapter_dir = os.path.dirname(trans)
        prefix = os.path.basename(trans)[: -len(TRANS_SUFFIX)] + "-"
        with open(trans, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                line = line.strip()
                if not line:
                    continue
                parts = line.split(" ", 1)
                utt_id = parts[0]
                words = " ".join(parts[1].split()) if len(parts) == 2 else ""
                if not utt_id.startswith(prefix) or not words:
                    problems.append(
                        (
                            "malformed transcript line",
                            f"malformed transcript line {trans}:{lineno}: expected "
                            f"'{prefix}<utt> WORDS ...', got {line[:80]!r}",
                        )
                    )
                    continue
                wav = os.path.join(chapter_dir, utt_id + AUDIO_EXT)
                transcribed.add(os.path.abspath(wav))
                if not os.path.isfile(wav):
                    problems.append(
                        (
                            "transcript line with no audio",
                            f"transcript line with no audio: {trans}:{lineno} "
                            f"names utterance {utt_id} but {wav} does not exist",
                        )
                    )
                    continue
                entries.append((utt_id, os.path.abspath(wav), words))

    audio_files = sorted(glob.glob(os.path.join(split_folder, "*", "*", "*" + AUDIO_EXT)))
    for wav in audio_files:
        if os.path.abspath(wav) not in transcribed:
            utt_id = os.path.basename(wav)[: -len(AUDIO_EXT)]
            chap_id = "-".join(utt_id.split("-")[:2])
            expected = os.path.join(os.path.dirname(wav), chap_id + TRANS_SUFFIX)
            problems.append(
                (
                    "audio with no transcript line",
                    f"audio with no transcript line: {wav} has no line '{utt_id} ...' in {expected}",
                )
            )
    if not trans_files and not audio_files:
        raise LibriSpeechFormatError(
            f"LibriSpeech split folder {split_folder!r} holds no "
            f"<speaker>/<chapter>/*{TRANS_SUFFIX} transcript nor *{AUDIO_EXT} "
            "audio file"
        )

    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as ex:
        durations = list(ex.map(_read_duration, [e[1] for e in entries]))
    rows = []
    for (utt_id, wav, words), (dur, err) in zip(entries, durations):
        if err is not None:
            problems.append(err)
            continue
        rows.append(
            {
                "ID": utt_id,
                "duration": dur,
                "wav": wav,
                "spk_id": "-".join(utt_id.split("-")[:2]),
                "wrd": words,
            }
        )

    if problems:
        if on_error == "raise":
            shown = "\n  ".join(msg for _, msg in problems[:10])
            more = len(problems) - 10
            raise LibriSpeechFormatError(
                f"{len(problems)} problem(s) in LibriSpeech split {split_folder!r} "
                f"(pass on_error='skip' to leave such utterances out):\n  {shown}"
                + (f"\n  ... and {more} more" if more > 0 else "")
            )
        counts = {}
        for kind, _ in problems:
            counts[kind] = counts.get(kind, 0) + 1
        logger.warning(
            "%s: skipped %d problem(s): %s (first: %s)",
            split_folder,
            len(problems),
            ", ".join(f"{n} {k}" for k, n in sorted(counts.items())),
            problems[0][1],
        )
    rows.sort(key=lambda r: r["ID"])
    return rows


def _read_duration(path):
    """Returns (seconds, None) from the header, or (None, (kind, message))."""
    try:
        if os.path.getsize(path) == 0:
            return None, ("empty audio file", f"empty audio file {path}: it is 0 bytes")
    except OSError:
        pass  # reported below as unreadable
    try:
        info = sf.info(path)
    except Exception as e:  # libsndfile's error type varies across versions
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        return None, (
            "unreadable audio file",
            f"unreadable audio file {path}: expected a {AUDIO_EXT} file libsndfile can open ({msg})",
        )
    if info.frames <= 0 or info.samplerate <= 0:
        return None, (
            "empty audio file",
            f"empty audio file {path}: it holds no samples",
        )
    return info.frames / info.samplerate, None
