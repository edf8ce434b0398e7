"""Files written so that a reader never sees half of them.

Every file the recipes and tools write for others to read (``results.json``,
``encoder_config.json``, ``wer_<split>.txt``, the exported ``pretrained/``
files, an ARPA LM, ...) goes through :func:`atomic_write`: it is written under a
temporary name in the same folder, then renamed over the target (a rename is
atomic), so a run killed while writing leaves the previous file or none, never
a truncated one. :func:`write_json` and :func:`copy_file` use it.

Example
-------
>>> import tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "results.json")
>>> write_json(path, {"WER": 8.31})
>>> print(open(path).read().strip())
{
  "WER": 8.31
}
>>> with atomic_write(path) as f:
...     _ = f.write("half")
...     raise RuntimeError("stopped while writing")  # the old file stays
Traceback (most recent call last):
...
RuntimeError: stopped while writing
>>> open(path).read().startswith("{"), os.listdir(os.path.dirname(path))
(True, ['results.json'])

Authors
 * pom-speech contributors 2025
"""

import contextlib
import json
import os
import shutil
import uuid


@contextlib.contextmanager
def atomic_write(path, mode="w"):
    """Opens a temporary file beside ``path`` for writing (``mode`` ``"w"``:
    UTF-8 text, ``"wb"``: bytes); when the ``with`` block ends without an
    error, the file is renamed to ``path``, else removed."""
    tmp = os.path.join(
        os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    )
    try:
        with open(tmp, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path, data):
    """Writes ``data`` as indented JSON with sorted keys, atomically."""
    with atomic_write(path) as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")


def copy_file(src, dst):
    """Copies ``src`` to ``dst`` atomically."""
    with open(src, "rb") as source, atomic_write(dst, "wb") as f:
        shutil.copyfileobj(source, f)
