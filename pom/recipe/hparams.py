"""Hyperparameter files of the recipes: an experiment YAML merged over its ``base:`` files.

* :func:`load_hparams` -- ``load_hyperpyyaml`` for files that start with
  ``base: [base.yaml, ../encoders/<experiment>.yaml]``: the per-experiment YAML
  is merged over a shared base (nested mappings key by key), then the command
  line on top; :func:`resolve_hparams_file` does the merge without loading.
* :func:`save_hparams_record`, :func:`load_hparams_record` -- what a
  fine-tuning run keeps to rebuild its model later (:mod:`pom.transcribe`).

Authors
 * pom-speech contributors 2025
"""

import os

from hyperpyyaml import load_hyperpyyaml
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from pom.recipe.files import atomic_write, copy_file

#: The files of a run record (see :func:`save_hparams_record`).
RECORD_BASE = "hparams_base.yaml"
RECORD_OVERRIDES = "hparams_overrides.yaml"


def _merge(into, update):
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
    return into


def resolve_hparams_file(hparams_file, overrides=""):
    """Merges a per-run YAML over its ``base:`` file(s).

    A YAML file whose top level has ``base: <path>`` or ``base: [<path>, ...]``
    (relative to the file) is an *overlay*. The first path is the full
    hyperpyyaml file; the next ones (e.g. ``../encoders/pom.yaml``, the one
    description of an encoder that both stages read) are plain key: value
    overlays merged over it in order; the file's other keys come next, and the
    command-line ``overrides`` last. If the base file has an ``experiment_name``
    key, it defaults to the overlay's file name (``pom_large.yaml`` ->
    ``pom_large``), so that every experiment file has its own output folder. Nested mappings such as ``mixer_options``
    are merged key by key. Overrides must name keys of the base file.

    Returns ``(yaml_path, overrides)`` to pass to ``load_hyperpyyaml``: the
    base file and the merged overrides (a dict, tags such as ``!ref`` kept).
    A file without ``base:`` is returned unchanged.

    Example
    -------
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> _ = open(os.path.join(d, "base.yaml"), "w").write(
    ...     "d_model: 8\\nlr: 0.1\\nmixer_options: {}\\nd_ffn: !ref <d_model> * 2\\n")
    >>> _ = open(os.path.join(d, "enc.yaml"), "w").write("d_model: 4\\nmixer_options: {degree: 2}\\n")
    >>> _ = open(os.path.join(d, "pom.yaml"), "w").write(
    ...     "base: [base.yaml, enc.yaml]\\nmixer_options: {expansion: 2}\\n")
    >>> path, merged = resolve_hparams_file(os.path.join(d, "pom.yaml"), "mixer_options: {degree: 3}")
    >>> os.path.basename(path), dict(merged["mixer_options"])
    ('base.yaml', {'degree': 3, 'expansion': 2})
    >>> h = load_hparams(os.path.join(d, "pom.yaml"), "lr: 0.5")
    >>> h["d_model"], h["d_ffn"], h["lr"]
    (4, 8, 0.5)
    """
    overlay = _read_yaml(hparams_file)
    try:
        cli = YAML().load(overrides) if isinstance(overrides, str) and overrides.strip() else (overrides or {})
    except YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ValueError(f"command-line overrides: {problem} (give each --option once, as --key=value)") from None
    if not isinstance(overlay, dict) or "base" not in overlay:
        return hparams_file, cli
    bases = overlay.pop("base")
    bases = [bases] if isinstance(bases, str) else list(bases)
    folder = os.path.dirname(os.path.abspath(hparams_file))
    paths = [os.path.normpath(os.path.join(folder, str(b))) for b in bases]
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{hparams_file}: its base file {path} does not exist")
    merged = {}
    if "experiment_name" in _read_yaml(paths[0]):  # named after the file unless set
        merged["experiment_name"] = os.path.splitext(os.path.basename(hparams_file))[0]
    for path in paths[1:]:
        layer = _read_yaml(path)
        if not isinstance(layer, dict) or "base" in layer:
            raise ValueError(f"{path} (a base of {hparams_file}) must be a plain key: value overlay without base:")
        _merge(merged, layer)
    return paths[0], _merge(_merge(merged, overlay), cli)


def _read_yaml(path):
    try:
        with open(path, encoding="utf-8") as f:
            return YAML().load(f) or {}
    except YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {getattr(err, 'problem', None) or err}") from None


def load_hparams(hparams_file, overrides=""):
    """``load_hyperpyyaml`` for overlay files (see :func:`resolve_hparams_file`);
    an override of a key the base file lacks raises ``KeyError``."""
    path, merged = resolve_hparams_file(hparams_file, overrides)
    with open(path, encoding="utf-8") as f:
        return load_hyperpyyaml(f, merged)


def save_hparams_record(output_folder, base_file, merged_overrides):
    """Keeps what rebuilds the model of a run: a copy of the base YAML and the
    merged overrides (experiment file + command line) as YAML. SpeechBrain's
    resolved ``hyperparams.yaml`` cannot always be loaded again (its anchors
    collide when hyperpyyaml re-resolves it), so :mod:`pom.transcribe` uses these.

    Example
    -------
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> _ = open(os.path.join(d, "base.yaml"), "w").write("d_model: 8\\nd_ffn: !ref <d_model> * 2\\n")
    >>> save_hparams_record(d, os.path.join(d, "base.yaml"), {"d_model": 4})
    >>> load_hparams_record(d)["d_ffn"]
    8
    """
    copy_file(base_file, os.path.join(output_folder, RECORD_BASE))
    with atomic_write(os.path.join(output_folder, RECORD_OVERRIDES)) as f:
        YAML().dump(merged_overrides or {}, f)


def load_hparams_record(output_folder, overrides=None):
    """Loads the hyperparameters of a run saved by :func:`save_hparams_record`,
    with ``overrides`` (a dict) on top."""
    with open(os.path.join(output_folder, RECORD_OVERRIDES), encoding="utf-8") as f:
        merged = YAML().load(f) or {}
    merged.update(overrides or {})
    with open(os.path.join(output_folder, RECORD_BASE), encoding="utf-8") as f:
        return load_hyperpyyaml(f, merged)
