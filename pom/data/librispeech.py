"""LibriSpeech data preparation: one SpeechBrain CSV manifest per split.

Given a LibriSpeech root (the folder holding ``train-clean-100``,
``dev-clean``, ... as unpacked from the official archives, or as written by
:mod:`pom.data.synthetic`), writes ``<save_folder>/<split>.csv`` for every
split asked for, with the SpeechBrain columns ``ID,duration,wav,spk_id,wrd``,
and optionally one merged CSV (e.g. ``train.csv``) of several splits.

* The split folders are read and checked by :mod:`pom.data.librispeech_folders`
  (durations from the audio headers, every transcript line against the audio).
* Audio paths are written relative to the data folder, as ``$data_root/<split>/...``
  (SpeechBrain's convention, :mod:`pom.data.csv_manifest`): readers give
  ``replacements={"data_root": data_folder}`` to ``DynamicItemDataset.from_csv``
  (or call :func:`read_csv_rows`), so a prepared folder works on any machine
  that has the corpus, wherever it is.
* ``avoid_if_longer_than`` / ``avoid_if_shorter_than`` filter by duration;
  rows are written in utterance-ID order (recipes sort by duration
  themselves through their ``sorting`` option).
* The work is skipped when every CSV exists and ``prepare_librispeech.json``
  beside them records the same options and the same modification times of
  the split folders; anything else (new options, a regenerated corpus, a CSV
  missing after an interrupted run) prepares again.
* CSVs are written under a temporary name and renamed, so a reader never
  sees a half-written manifest; the options file is written last, and the
  temporary files that an interrupted preparation left are removed (not those
  of a concurrent one, which is still writing).
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

import json
import os

from speechbrain.utils.logger import get_logger

from pom.data.csv_manifest import (  # noqa: F401 -- CSV_HEADER, DATA_ROOT, TMP_MARK: names of this module too
    CSV_HEADER,
    DATA_ROOT,
    TMP_MARK,
    read_csv_rows,
    relative_to_data_root,
    remove_stale_tmp,
    write_csv,
    write_text_atomic,
)
from pom.data.librispeech_folders import (  # noqa: F401 -- names of this module too
    AUDIO_EXT,
    LIBRISPEECH_SPLITS,
    TRANS_SUFFIX,
    LibriSpeechFormatError,
    check_librispeech_folders,
    collect_split,
)

logger = get_logger(__name__)

OPT_FILE = "prepare_librispeech.json"
#: Version 2: audio paths relative to $data_root (version 1: absolute paths).
PREP_VERSION = 2


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
    remove_stale_tmp(save_folder)

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
    write_text_atomic(opt_path, json.dumps(options, indent=2, sort_keys=True) + "\n")


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
