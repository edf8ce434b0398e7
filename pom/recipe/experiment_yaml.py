"""One experiment as one YAML file: its base file with every layer merged in, each change's source in a comment.

``python -m pom.recipe.hparams FILE [--key=value ...]`` prints it. The output is
the base file (``hparams/pretrain/base.yaml``, ...) line for line, comments
included, except the settings that a later layer changes (the overlays of
``base:`` such as ``setups/whetten2024.yaml`` and ``../encoders/pom.yaml``, the
experiment file's own keys, the command line, in this order: see
:func:`pom.recipe.hparams.hparams_layers`): those are written with the value that
:func:`pom.recipe.hparams.load_hparams` uses and a ``# from <source>`` comment
(mappings such as ``mixer_options`` are merged key by key, as hyperpyyaml merges
overrides). Plain ``hyperpyyaml.load_hyperpyyaml`` loads the output into the
same hyperparameters as ``load_hparams(FILE, overrides)``.

Example
-------
>>> import tempfile
>>> from hyperpyyaml import load_hyperpyyaml
>>> d = tempfile.mkdtemp()
>>> _ = open(os.path.join(d, "base.yaml"), "w").write(
...     "# the base\\nd_model: 8 # width\\nlr: 0.1\\nopts: {a: 1}\\nd_ffn: !ref <d_model> * 2\\n")
>>> _ = open(os.path.join(d, "exp.yaml"), "w").write("base: base.yaml\\nd_model: 4 # narrower\\nopts: {b: 2}\\n")
>>> text = experiment_yaml(os.path.join(d, "exp.yaml"), "lr: 0.5")
>>> print(text[text.index("# the base") :], end="")
# the base
d_model: 4 # from .../exp.yaml: narrower
lr: 0.5 # from the command line
opts:
    a: 1
    b: 2 # from .../exp.yaml
d_ffn: !ref <d_model> * 2
>>> load_hyperpyyaml(text)["d_ffn"]
8

Authors
 * pom-speech contributors 2025
"""

import copy
import io
import os
import sys

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar

from pom.recipe.hparams import display_path, hparams_layers

USAGE = "usage: python -m pom.recipe.hparams FILE [--key=value ...]"


def experiment_yaml(hparams_file, overrides=""):
    """The experiment ``hparams_file`` with ``overrides`` (a YAML string or a
    dict, as :func:`pom.recipe.hparams.load_hparams` takes them) as one
    hyperpyyaml text: see the module's documentation."""
    base, layers = hparams_layers(hparams_file, overrides)
    with open(base, encoding="utf-8") as f:
        text = f.read()
    tree = YAML().load(text)
    if not isinstance(tree, dict):
        raise ValueError(f"{base} is not a mapping of settings")
    values, origins = {}, {}
    for source, settings in layers:
        for key, new in settings.items():
            old = values[key] if key in values else copy.deepcopy(tree[key])
            values[key], origins[key] = _overlay(old, origins.get(key), new, _label(source, settings, key))
    lines = text.splitlines(keepends=True)
    spans = _spans(lines, tree)
    out, cursor = [], 0
    for key, (start, end) in spans.items():
        if key in values:
            out += lines[cursor:start] + [_render(key, values[key], origins[key])]
            cursor = end
    out += lines[cursor:]
    if out and not out[-1].endswith("\n"):
        out[-1] += "\n"
    missing = [key for key in tree if key not in values and _is_placeholder(tree[key])]
    return _header(hparams_file, base, layers, missing) + "".join(out)


def _label(source, settings, key):
    """``source``, followed by the comment on ``key``'s line in that layer, if any."""
    note = _line_comment(settings, key)
    return f"{source}: {note}" if note else source


def _line_comment(mapping, key):
    items = getattr(getattr(mapping, "ca", None), "items", {})
    token = (items.get(key) or [None, None, None])[2] if key in items else None
    first = (getattr(token, "value", "") or "").split("\n")[0].strip()
    return first[1:].strip() if first.startswith("#") else ""


def _overlay(old, origin, new, label):
    """hyperpyyaml's update of one value by a later layer: ``(value, origin)``, the
    origin being None (the base file's), a label, or for a non-empty mapping updated
    key by key a dict of the origins of its keys."""
    if isinstance(new, dict) and isinstance(old, dict) and old:
        if not isinstance(origin, dict):
            origin = {key: origin for key in old}
        for key, value in new.items():
            nested = _label(label, new, key) if _line_comment(new, key) else label
            if key in old:
                old[key], origin[key] = _overlay(old[key], origin[key], value, nested)
            else:
                old[key], origin[key] = _plain(value), nested
        return old, origin
    return _plain(new), label


def _plain(node):
    """A copy of a YAML node without its comments (tags and styles kept)."""
    node = copy.deepcopy(node)
    _drop_comments(node)
    return node


def _drop_comments(node):
    if isinstance(node, (CommentedMap, CommentedSeq)):
        node.ca.items.clear()
        node.ca.comment = None
        for child in node.values() if isinstance(node, dict) else node:
            _drop_comments(child)


def _spans(lines, tree):
    """``{key: (first line, end line)}`` of every top-level setting, the comment and
    blank lines that follow a value left to the next setting."""
    starts = [tree.lc.key(key)[0] for key in tree]
    spans = {}
    for i, key in enumerate(tree):
        end = starts[i + 1] if i + 1 < len(starts) else len(lines)
        while end > starts[i] + 1 and (not lines[end - 1].strip() or lines[end - 1].startswith("#")):
            end -= 1
        spans[key] = (starts[i], end)
    return spans


def _render(key, value, origin):
    """``key: value`` as YAML text, with the ``# from`` comments of ``origin``."""
    if isinstance(origin, dict):
        _comment_keys(value, origin)
    document = CommentedMap()
    document[key] = value
    yaml = YAML()
    yaml.width = 4096
    yaml.indent(mapping=4, sequence=6, offset=4)
    yaml.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    stream = io.StringIO()
    yaml.dump(document, stream)
    text = stream.getvalue()
    if isinstance(origin, str):
        first, _, rest = text.partition("\n")
        text = f"{first} # from {origin}\n{rest}"
    return text


def _comment_keys(mapping, origins):
    if isinstance(mapping, CommentedMap):
        mapping.fa.set_block_style()
    for key, origin in origins.items():
        if isinstance(origin, dict):
            _comment_keys(mapping[key], origin)
        elif origin is not None and isinstance(mapping, CommentedMap):
            mapping.yaml_add_eol_comment(f"# from {origin}", key)


def _is_placeholder(node):
    return isinstance(node, TaggedScalar) and str(getattr(node.tag, "value", node.tag)) == "!PLACEHOLDER"


def _header(hparams_file, base, layers, missing):
    given, base = display_path(hparams_file), display_path(base)
    sources = [source for source, _ in layers if not source.startswith("the name of ")]
    lines = [f"# {given} as one file (python -m pom.recipe.hparams {given} [--key=value ...]):"]
    if sources:
        lines.append(f"# {base}, then merged over it in this order: {', '.join(sources)}.")
        lines.append(f'# A setting they change says "from" where it comes from; every other one is from {base}.')
    lines.append("# Plain hyperpyyaml.load_hyperpyyaml loads it, as SpeechBrain loads a recipe's YAML file.")
    if missing:
        needed = " ".join(f"--{key}=..." for key in missing)
        lines.append(f"# Still to give (!PLACEHOLDER): {', '.join(missing)} ({needed}, or as overrides when loading).")
    return "\n".join(lines) + "\n\n"


def overrides_from_args(args):
    """SpeechBrain's ``--key=value`` (or ``--key value``) arguments as a YAML string.

    Example
    -------
    >>> print(overrides_from_args(["--lr=0.5", "--mixer_options={degree: 3}", "--seed", "7"]))
    lr: 0.5
    mixer_options: {degree: 3}
    seed: 7
    """
    lines, i = [], 0
    while i < len(args):
        key, sep, value = args[i][2:].partition("=") if args[i].startswith("--") else ("", "", "")
        if not key:
            raise ValueError(f"{args[i]!r}: expected --key=value (a setting of the experiment and its value)")
        if not sep:
            if i + 1 == len(args) or args[i + 1].startswith("--"):
                raise ValueError(f"--{key} has no value: give --{key}=value")
            i, value = i + 1, args[i + 1]
        lines.append(f"{key}: {value}")
        i += 1
    return "\n".join(lines)


def main(argv=None):
    """``python -m pom.recipe.hparams FILE [--key=value ...]``: prints the
    experiment; a bad file or override is one line on stderr (exit status 2)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.split("\n\n")[0] + "\n" + USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    try:
        if not os.path.isfile(argv[0]):
            raise FileNotFoundError(f"{argv[0]} is not a file (give one, e.g. hparams/pretrain/pom.yaml)")
        text = experiment_yaml(argv[0], overrides_from_args(argv[1:]))
    except (ValueError, KeyError, OSError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"error: {message}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0
