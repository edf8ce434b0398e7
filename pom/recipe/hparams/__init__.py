"""Hyperparameter files of the recipes: an experiment YAML merged over its ``base:`` files.

* :func:`load_hparams` -- ``load_hyperpyyaml`` for files that start with
  ``base: [base.yaml, ../encoders/<experiment>.yaml]``: the per-experiment YAML
  is merged over a shared base (nested mappings key by key), then the command
  line on top; :func:`resolve_hparams_file` does the merge without loading,
  :func:`hparams_layers` lists what it merges, layer by layer.
* ``python -m pom.recipe.hparams FILE [--key=value ...]`` prints one experiment
  as a single YAML file that plain ``load_hyperpyyaml`` loads, each setting's
  source in a comment (:mod:`pom.recipe.experiment_yaml`).
* :func:`save_run_hparams` -- the run's resolved ``hyperparams.yaml``
  (SpeechBrain's file), written so that it loads again;
  :func:`load_run_hparams` loads it (e.g. to rebuild a fine-tuned model).

Authors
 * pom-speech contributors 2025
"""

import copy
import datetime
import io
import os

from hyperpyyaml import load_hyperpyyaml, resolve_references
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.error import YAMLError

from pom.recipe.files import atomic_write

#: SpeechBrain's name for the resolved hyperparameters of a run (``create_experiment_directory``).
RUN_HPARAMS = "hyperparams.yaml"
#: The source of the command-line overrides in :func:`hparams_layers`.
COMMAND_LINE = "the command line"


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
    ``pom_large``), so that every experiment file has its own output folder.
    Nested mappings such as ``mixer_options`` are merged key by key. Every
    layer must name keys of the base file (see :func:`hparams_layers`).

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
    base, layers = hparams_layers(hparams_file, overrides)
    merged = {}
    for _, settings in layers:
        _merge(merged, copy.deepcopy(settings))
    return base, merged


def hparams_layers(hparams_file, overrides=""):
    """What :func:`resolve_hparams_file` merges, layer by layer: ``(base_path,
    layers)``, ``layers`` a list of ``(source, settings)`` in merge order (the
    experiment's name from its file, the overlay files of ``base:``, the
    experiment file's own keys, the command line), ``source`` naming where the
    settings come from (a file, as given relative to the working directory,
    or ``"the command line"``). A file without ``base:`` is its own base.

    Raises ``KeyError`` naming the layer when one sets a key the base file
    does not have (hyperpyyaml would refuse it), ``ValueError`` for bad YAML,
    ``FileNotFoundError`` for a missing file."""
    overlay = _read_yaml(hparams_file)
    cli = _parse_overrides(overrides)
    layers = []
    if isinstance(overlay, dict) and "base" in overlay:
        bases = overlay.pop("base")
        bases = [bases] if isinstance(bases, str) else list(bases)
        folder = os.path.dirname(os.path.abspath(hparams_file))
        paths = [os.path.normpath(os.path.join(folder, str(b))) for b in bases]
        for path in paths:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{hparams_file}: its base file {path} does not exist")
        base, base_keys = paths[0], _read_yaml(paths[0])
        if "experiment_name" in base_keys:  # named after the file unless set
            name = os.path.splitext(os.path.basename(hparams_file))[0]
            layers.append((f"the name of {display_path(hparams_file)}", {"experiment_name": name}))
        for path in paths[1:]:
            layer = _read_yaml(path)
            if not isinstance(layer, dict) or "base" in layer:
                raise ValueError(f"{path} (a base of {hparams_file}) must be a plain key: value overlay without base:")
            layers.append((display_path(path), layer))
        layers.append((display_path(hparams_file), overlay))
    else:
        base, base_keys = hparams_file, overlay
    if cli:
        layers.append((COMMAND_LINE, cli))
    for source, settings in layers:
        unknown = [key for key in settings if key not in base_keys]
        if unknown:
            raise KeyError(f"{source} sets {unknown[0]!r}, which is not a setting of {display_path(base)}")
    return base, layers


def display_path(path):
    """``path`` relative to the working directory when it is below it, else absolute."""
    relative = os.path.relpath(os.path.abspath(path))
    return relative if not relative.startswith("..") else os.path.abspath(path)


def _parse_overrides(overrides):
    try:
        if isinstance(overrides, str):
            return (YAML().load(overrides) or {}) if overrides.strip() else {}
        return overrides or {}
    except YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ValueError(f"command-line overrides: {problem} (give each --option once, as --key=value)") from None


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


def save_run_hparams(output_folder, base_file, overrides):
    """Writes ``<output_folder>/hyperparams.yaml``: ``base_file`` with
    ``overrides`` (see :func:`resolve_hparams_file`) and every ``!ref``
    resolved, as SpeechBrain's ``create_experiment_directory`` writes it, but
    so that it loads again: once hyperpyyaml has loaded a file in a process,
    ruamel reads ``(128, 32)`` as a ``!tuple`` node, and a tuple referenced
    twice (``cnn_channels``, ``adam_betas``) would be written once with an
    anchor and then as an alias, which hyperpyyaml cannot load (``KeyError:
    0``). Here every occurrence of a tuple is written in full. Written
    atomically; call it on the main process.

    Example
    -------
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> _ = open(os.path.join(d, "base.yaml"), "w").write(
    ...     "channels: (8, 4)\\nout: !ref <channels>\\nd_model: 8\\nd_ffn: !ref <d_model> * 2\\n")
    >>> _ = load_hyperpyyaml("a: (1, 2)")  # as in a recipe: hyperpyyaml has loaded a file before
    >>> save_run_hparams(d, os.path.join(d, "base.yaml"), {"d_model": 4})
    >>> h = load_run_hparams(d)
    >>> h["out"], h["d_ffn"]
    ((8, 4), 8)
    """
    with open(base_file, encoding="utf-8") as f:
        resolved = resolve_references(f, overrides or {}).getvalue()
    yaml = YAML()
    tree = yaml.load(resolved)
    tree = _unshare_tuples(tree)
    with atomic_write(os.path.join(output_folder, RUN_HPARAMS)) as w:
        w.write(f"# Generated {datetime.date.today()} from:\n# {os.path.abspath(base_file)}\n# yamllint disable\n")
        yaml.dump(tree, w)


def _unshare_tuples(node):
    """A fresh copy of every ``!tuple`` scalar, so that none is written as an alias."""
    if isinstance(node, TaggedScalar) and str(node.tag) == "!tuple":
        return TaggedScalar(node.value, style=node.style, tag="!tuple")
    if isinstance(node, CommentedMap):
        for key in list(node.keys()):
            node[key] = _unshare_tuples(node[key])
    elif isinstance(node, CommentedSeq):
        for i, value in enumerate(node):
            node[i] = _unshare_tuples(value)
    return node


def load_run_hparams(run_folder, overrides=None):
    """The hyperparameters of a recipe run (pre-training or fine-tuning),
    loaded from its ``hyperparams.yaml`` (written by :func:`save_run_hparams`)
    with ``overrides`` (a dict of keys of the file) on top.

    The run's paths follow the folder: every path under the run's saved
    ``output_folder`` (``save_folder``, the checkpointer's folder, the logs,
    ...) is read under ``run_folder``, wherever the run was made from or moved
    to. Loading builds the model (random weights: load a checkpoint, e.g.
    :func:`pom.recipe.checkpoints.final_checkpoint`, for the trained ones);
    nothing is prepared, trained or logged.
    """
    path = os.path.join(run_folder, RUN_HPARAMS)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: {run_folder} is not the output folder of a recipe run")
    yaml = YAML()
    with open(path, encoding="utf-8") as f:
        tree = yaml.load(f)
    saved = str(tree.get("output_folder", "") or "")
    if saved:
        tree = _relocate(tree, saved.rstrip("/"), os.path.abspath(run_folder))
    stream = io.StringIO()
    yaml.dump(_unshare_tuples(tree), stream)
    return load_hyperpyyaml(stream.getvalue(), dict(overrides or {}))


def _relocate(node, old, new):
    """Replaces the prefix ``old`` of every path string under it by ``new``."""
    if isinstance(node, str) and not isinstance(node, TaggedScalar):
        if node == old or node.startswith(old + "/"):
            return type(node)(new + node[len(old) :])  # str, or ruamel's quoted str
        return node
    if isinstance(node, CommentedMap):
        for key in list(node.keys()):
            node[key] = _relocate(node[key], old, new)
    elif isinstance(node, CommentedSeq):
        for i, value in enumerate(node):
            node[i] = _relocate(value, old, new)
    return node
