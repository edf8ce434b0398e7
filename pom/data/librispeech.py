"""LibriSpeech data preparation: one SpeechBrain CSV manifest per split.

(About 470 lines, one job: the checks of every input, the skip-if-done record
and the writes that concurrent or interrupted preparations must survive belong
with the preparation. Its temporary files carry the writer's process id, so a
concurrent preparation can tell a live writer from a stale file: hence its own
writer rather than :func:`pom.recipe.files.atomic_write`.)

Given a LibriSpeech root (the folder holding ``train-clean-100``,
``dev-clean``, ... as unpacked from the official archives, or as written by
:mod:`pom.data.synthetic`), writes ``<save_folder>/<split>.csv`` for every
split asked for, with the SpeechBrain columns ``ID,duration,wav,spk_id,wrd``,
and optionally one merged CSV (e.g. ``train.csv``) of several splits.

* Audio paths are written relative to the data folder, as ``$data_root/<split>/...``
  (SpeechBrain's convention): readers give ``replacements={"data_root": data_folder}``
  to ``DynamicItemDataset.from_csv`` (or call :func:`read_csv_rows`), so a prepared
  folder works on any machine that has the corpus, wherever it is.
* Durations come from the audio file headers (no decoding).
* ``avoid_if_longer_than`` / ``avoid_if_shorter_than`` filter by duration;
  rows are written in utterance-ID order (recipes sort by duration
  themselves through their ``sorting`` option).
* The work is skipped when every CSV exists and ``prepare_librispeech.json``
  beside them records the same options and the same modification times of
  the split folders; anything else (new options, a regenerated corpus, a CSV
  missing after an interrupted run) prepares again.
* CSVs are written under a temporary name and renamed, so a reader never
  sees a half-written manifest; the options file is written last.
* Bad input raises an error naming the path and what was expected. For
  problems with single utterances (transcript line without audio, audio
  without transcript line, unreadable or empty audio file, malformed line)
  ``on_error="skip"`` skips them instead and logs a count per kind.

Recipes call it through ``speechbrain.utils.distributed.run_on_main`` so
that only the main process writes.

Example
-------
>>> import os, tempfile, numpy as np, soundfile as sf
>>> root = tempfile.mkdtemp()
>>> chap = os.path.join(root, "LibriSpeech", "dev-clean", "84", "121123")
>>> os.makedirs(chap)
>>> sf.write(os.path.join(chap, "84-121123-0000.flac"),
...          np.zeros(8000, dtype="int16"), 16000)
>>> with open(os.path.join(chap, "84-121123.trans.txt"), "w") as f:
...     _ = f.write("84-121123-0000 GO DO YOU HEAR\\n")
>>> prepare_librispeech(os.path.join(root, "LibriSpeech"),
...                     os.path.join(root, "csv"), dev_splits=["dev-clean"])
>>> print(open(os.path.join(root, "csv", "dev-clean.csv")).read().split()[:2])
['ID,duration,wav,spk_id,wrd', '84-121123-0000,0.5,$data_root/dev-clean/84/121123/84-121123-0000.flac,84-121123,GO']
>>> rows = read_csv_rows(os.path.join(root, "csv", "dev-clean.csv"), os.path.join(root, "LibriSpeech"))
>>> os.path.isfile(rows[0]["wav"])
True

Authors
 * pom-speech contributors 2025
"""

import csv
import glob
import json
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
CSV_HEADER = ["ID", "duration", "wav", "spk_id", "wrd"]
OPT_FILE = "prepare_librispeech.json"
AUDIO_EXT = ".flac"
TRANS_SUFFIX = ".trans.txt"
TMP_MARK = ".tmp-"
#: Version 2: audio paths relative to $data_root (version 1: absolute paths).
PREP_VERSION = 2
#: The placeholder of the data folder in the CSVs' audio paths.
DATA_ROOT = "$data_root"


class LibriSpeechFormatError(ValueError):
    """Raised when a LibriSpeech split holds inconsistent or bad files."""


def prepare_librispeech(
    data_folder,
    save_folder,
    tr_splits=(),
    dev_splits=(),
    te_splits=(),
    merge_lst=None,
    merge_name="train.csv",
    avoid_if_longer_than=None,
    avoid_if_shorter_than=None,
    on_error="raise",
    skip_prep=False,
):
    """Writes one SpeechBrain CSV per LibriSpeech split, plus a merged CSV.

    Arguments
    ---------
    data_folder : str
        The LibriSpeech root, holding the split folders
        (``.../LibriSpeech``, not its parent).
    save_folder : str
        Where ``<split>.csv``, the merged CSV and ``prepare_librispeech.json``
        are written (created if needed).
    tr_splits, dev_splits, te_splits : list of str
        Split folder names to prepare, e.g. ``["train-clean-100"]``.
    merge_lst : list of str, optional
        Splits whose rows are concatenated into ``save_folder/merge_name``.
        Splits named here are prepared even if absent from the lists above.
    merge_name : str
        File name of the merged CSV.
    avoid_if_longer_than : float, optional
        Drop utterances longer than this many seconds.
    avoid_if_shorter_than : float, optional
        Drop utterances shorter than this many seconds.
    on_error : str
        ``"raise"`` stops at bad utterances with an error naming them;
        ``"skip"`` leaves them out and logs how many were skipped.
    skip_prep : bool
        If True, do nothing.
    """
    if skip_prep:
        return
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    splits = []
    for split in list(tr_splits) + list(dev_splits) + list(te_splits):
        if split not in splits:
            splits.append(split)
    merge_lst = list(merge_lst) if merge_lst else []
    for split in merge_lst:
        if split not in splits:
            splits.append(split)
    if not splits:
        raise ValueError(
            "prepare_librispeech: no split asked for; give tr_splits, "
            f"dev_splits or te_splits (names among {', '.join(LIBRISPEECH_SPLITS)})"
        )

    data_folder = os.path.abspath(data_folder)
    check_librispeech_folders(data_folder, splits)

    options = {
        "version": PREP_VERSION,
        "data_folder": data_folder,
        "splits": splits,
        "merge_lst": merge_lst,
        "merge_name": merge_name if merge_lst else None,
        "avoid_if_longer_than": avoid_if_longer_than,
        "avoid_if_shorter_than": avoid_if_shorter_than,
        "on_error": on_error,
        # A split folder rewritten since (e.g. a regenerated synthetic
        # corpus) has a new modification time: prepare again.
        "split_mtime_ns": {s: os.stat(os.path.join(data_folder, s)).st_mtime_ns for s in splits},
    }
    outputs = [os.path.join(save_folder, s + ".csv") for s in splits]
    if merge_lst:
        outputs.append(os.path.join(save_folder, merge_name))
    if _already_prepared(save_folder, options, outputs):
        logger.info(
            "LibriSpeech CSVs in %s match the options; skipping preparation",
            save_folder,
        )
        return

    os.makedirs(save_folder, exist_ok=True)
    # Whatever was there no longer describes what will be written: forget it
    # first, so that an interrupted run is never taken for a finished one.
    opt_path = os.path.join(save_folder, OPT_FILE)
    if os.path.exists(opt_path):
        os.remove(opt_path)
    _remove_stale_tmp(save_folder)

    rows_per_split = {}
    for split in splits:
        rows = collect_split(os.path.join(data_folder, split), on_error=on_error)
        rows = _filter_by_duration(rows, split, avoid_if_longer_than, avoid_if_shorter_than)
        rows = [dict(r, wav=relative_to_data_root(r["wav"], data_folder)) for r in rows]
        write_csv(os.path.join(save_folder, split + ".csv"), rows)
        rows_per_split[split] = rows
        hours = sum(r["duration"] for r in rows) / 3600.0
        logger.info("%s: %d utterances, %.3f h", split, len(rows), hours)
    if merge_lst:
        merged = [r for s in merge_lst for r in rows_per_split[s]]
        write_csv(os.path.join(save_folder, merge_name), merged)
        logger.info("%s: %d utterances from %s", merge_name, len(merged), ", ".join(merge_lst))
    _write_atomic(opt_path, json.dumps(options, indent=2, sort_keys=True) + "\n")


def relative_to_data_root(path, data_folder):
    """``$data_root/<path relative to data_folder>`` (with ``/``), for the CSVs.

    Example
    -------
    >>> relative_to_data_root("/data/LibriSpeech/dev-clean/1/2/1-2-0.flac", "/data/LibriSpeech")
    '$data_root/dev-clean/1/2/1-2-0.flac'
    """
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(data_folder))
    return DATA_ROOT + "/" + relative.replace(os.sep, "/")


def read_csv_rows(csv_path, data_folder):
    """The rows of a SpeechBrain CSV as dicts, ``$data_root`` replaced by
    ``data_folder`` (as ``DynamicItemDataset.from_csv`` with
    ``replacements={"data_root": data_folder}`` reads it)."""
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        if row.get("wav", "").startswith(DATA_ROOT):
            row["wav"] = data_folder + row["wav"][len(DATA_ROOT) :]
    return rows


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


def _filter_by_duration(rows, split, longer_than, shorter_than):
    """Drops rows outside [shorter_than, longer_than], logging how many."""
    kept = [
        r
        for r in rows
        if (longer_than is None or r["duration"] <= longer_than)
        and (shorter_than is None or r["duration"] >= shorter_than)
    ]
    if len(kept) < len(rows):
        logger.info(
            "%s: %d of %d utterances left out by duration (shorter than %s s or longer than %s s)",
            split,
            len(rows) - len(kept),
            len(rows),
            shorter_than,
            longer_than,
        )
    return kept


def write_csv(path, rows):
    """Writes a SpeechBrain CSV atomically (temporary file, then rename).

    Arguments
    ---------
    path : str
        Destination CSV.
    rows : list of dict
        Rows with the keys of ``CSV_HEADER``.
    """
    tmp = f"{path}{TMP_MARK}{os.getpid()}"
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_HEADER)
            for r in rows:
                writer.writerow([r[k] for k in CSV_HEADER])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _write_atomic(path, text):
    tmp = f"{path}{TMP_MARK}{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _remove_stale_tmp(save_folder):
    """Removes temporary files left behind by an interrupted preparation."""
    for path in glob.glob(os.path.join(save_folder, "*" + TMP_MARK + "*")):
        pid = path.rsplit(TMP_MARK, 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and _pid_alive(int(pid)):
            continue  # another process is writing it right now
        try:
            os.remove(path)
        except OSError:
            pass


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _already_prepared(save_folder, options, outputs):
    """True when every output exists and the saved options equal ``options``."""
    opt_path = os.path.join(save_folder, OPT_FILE)
    if not all(os.path.isfile(p) for p in outputs) or not os.path.isfile(opt_path):
        return False
    try:
        with open(opt_path, encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return False
    return saved == options
