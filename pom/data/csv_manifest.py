"""SpeechBrain CSV manifests: audio paths relative to ``$data_root``, writes that readers never see half-done.

* Audio paths are written relative to the data folder, as ``$data_root/<split>/...``
  (SpeechBrain's convention): readers give ``replacements={"data_root": data_folder}``
  to ``DynamicItemDataset.from_csv`` (or call :func:`read_csv_rows`), so a prepared
  folder works on any machine that has the corpus, wherever it is.
* :func:`write_csv` and :func:`write_text_atomic` write under a temporary name
  that carries the writer's process id, then rename, so that a reader never sees
  a half-written file and :func:`remove_stale_tmp` can tell the temporary file of
  a live writer (a concurrent preparation) from one an interrupted writer left
  behind (:func:`pom.recipe.files.atomic_write` has no such names).

Example
-------
>>> import os, tempfile
>>> folder = tempfile.mkdtemp()
>>> wav = relative_to_data_root("/data/LS/dev-clean/1-2-0.flac", "/data/LS")
>>> write_csv(os.path.join(folder, "dev-clean.csv"), [dict(ID="1-2-0", duration=0.5, wav=wav, spk_id="1-2", wrd="HI")])
>>> read_csv_rows(os.path.join(folder, "dev-clean.csv"), "/elsewhere/LS")[0]["wav"]
'/elsewhere/LS/dev-clean/1-2-0.flac'

Authors
 * pom-speech contributors 2025
"""

import csv
import glob
import os

CSV_HEADER = ["ID", "duration", "wav", "spk_id", "wrd"]
TMP_MARK = ".tmp-"
#: The placeholder of the data folder in the CSVs' audio paths.
DATA_ROOT = "$data_root"


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


def write_text_atomic(path, text):
    """Writes ``text`` to ``path`` under a temporary name, then renames it."""
    tmp = f"{path}{TMP_MARK}{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def remove_stale_tmp(save_folder):
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
