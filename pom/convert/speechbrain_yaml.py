"""What a BEST-RQ run's hyperparams file says that tensor shapes cannot.

SpeechBrain writes the resolved YAML of every run beside its checkpoints, but
the file a checkpoint comes with is often the one its authors published, with
references (``conformer_activation: !ref <activation>``, ``!copy``,
``!ref <d_model> // 2``) and placeholders (``data_folder: !PLACEHOLDER``).
:func:`resolve_hyperparams` resolves it as hyperpyyaml does (a full
``<key>`` keeps the referenced node's type; a reference inside a string is
interpolated, then evaluated as arithmetic; ``!copy`` is a reference too;
``!include:`` files are read), one node at a time, without building any
object: a node that cannot be resolved (a placeholder, a missing key, a
circular or attribute reference) becomes an :class:`Unresolved` marker that
only matters if it is read. :func:`read_hyperparams` then reads the few
settings a conversion needs (activation, dropout, causality, normalisation
type, the PoM degree and expansion, and the sizes, which are checked against
the tensors); a setting the file names but that cannot be resolved is a
one-line error naming the file and the key, never a default.

Example
-------
>>> import tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "hyperparams.yaml")
>>> _ = open(path, "w").write(
...     "data_folder: !PLACEHOLDER\\nd_model: 16\\nactivation: !name:torch.nn.GELU\\n"
...     "Transformer: !new:speechbrain.lobes.models.transformer.TransformerASR.TransformerASR\\n"
...     "    d_model: !ref <d_model>\\n    d_ffn: !ref <d_model> * 4\\n"
...     "    conformer_activation: !ref <activation>\\n")
>>> settings = read_hyperparams(path)
>>> settings["d_model"], settings["d_ffn"], settings["activation"]
(16, 64, 'torch.nn.modules.activation.GELU')

Authors
 * pom-speech contributors 2025
"""

import ast
import os
import re

from pom.convert.layout import CheckpointFormatError, import_dotted

#: A reference inside a value, as hyperpyyaml finds them.
REFERENCE = re.compile(r"<[^>]*>")


def find_hyperparams(ckpt_dir):
    """The ``hyperparams.yaml`` SpeechBrain wrote for the run of ``ckpt_dir``
    (in the folder, its ``save/`` parent or the output folder), or None."""
    here = os.path.abspath(ckpt_dir)
    for folder in (here, os.path.dirname(here), os.path.dirname(os.path.dirname(here))):
        candidate = os.path.join(folder, "hyperparams.yaml")
        if os.path.isfile(candidate):
            return candidate
    return None


def _tag(node):
    tag = getattr(node, "tag", None)
    return getattr(tag, "value", tag) or ""


def _value(node):
    """A resolved YAML value as plain Python: tuples written ``(a, b)`` become
    tuples, ``!name:x.y`` becomes ``"x.y"``."""
    tag = _tag(node)
    if tag.startswith("!name:"):
        return tag[len("!name:") :]
    if hasattr(node, "value") and not isinstance(node, (str, bytes)):  # a tagged scalar (hyperpyyaml's !tuple ...)
        node = node.value
    if isinstance(node, str) and node.startswith("(") and node.endswith(")"):
        try:
            return tuple(ast.literal_eval(node))
        except (ValueError, SyntaxError):
            return node
    return node


class Unresolved:
    """A node of a hyperparams file that cannot be resolved, and why (an error
    only where a setting is read from it)."""

    def __init__(self, reason):
        self.reason = reason

    def __repr__(self):
        return f"Unresolved({self.reason!r})"


class _Interrupted(Exception):
    """Carries an :class:`Unresolved` out of a string interpolation."""

    def __init__(self, unresolved):
        super().__init__(unresolved.reason)
        self.unresolved = unresolved


class _Resolver:
    """hyperpyyaml's reference rules over a ruamel tree, node by node (containers in place)."""

    def __init__(self, tree, folder):
        self.tree, self.folder, self.active = tree, folder, set()

    def node(self, node):
        tag = _tag(node)
        if tag == "!PLACEHOLDER":
            return Unresolved("it is a !PLACEHOLDER")
        if tag in ("!ref", "!copy"):
            return self.reference(str(node.value))
        if tag.startswith("!include:"):
            return self.include(tag[len("!include:") :], node)
        if isinstance(node, dict):
            for key in node:
                node[key] = self.node(node[key])
        elif isinstance(node, list):
            for i, item in enumerate(node):
                node[i] = self.node(item)
        return node

    def reference(self, text):
        """``<a[b]>`` alone keeps the target's type; inside a string, each target
        is interpolated and the result evaluated as arithmetic (hyperpyyaml's rules)."""
        from hyperpyyaml.core import parse_arithmetic

        if REFERENCE.fullmatch(text):
            return self.target(text[1:-1])

        def interpolate(match):
            value = self.target(match.group(0)[1:-1])
            if isinstance(value, Unresolved):
                raise _Interrupted(value)
            return str(_value(value))

        try:
            return parse_arithmetic(REFERENCE.sub(interpolate, text)) if REFERENCE.search(text) else text
        except _Interrupted as stop:
            return stop.unresolved

    def target(self, path):
        if "." in path:
            return Unresolved(f"<{path}> reads an attribute of an object built at load time")
        node = self.tree
        for part in path.split("["):
            part = part.strip("]")
            if not isinstance(node, dict) or part not in node:
                return Unresolved(f"<{path}> names no key of the file")
            node = node[part]
        if path in self.active:
            return Unresolved(f"<{path}> is a circular reference")
        self.active.add(path)
        try:
            return self.node(node)
        finally:
            self.active.discard(path)

    def include(self, name, node):
        """An ``!include:`` file, resolved by hyperpyyaml with the node's overrides."""
        from hyperpyyaml import resolve_references
        from ruamel.yaml import YAML

        try:
            with open(os.path.join(self.folder, name), encoding="utf-8") as f:
                overrides = dict(node) if isinstance(node, dict) and node else None
                return YAML(typ="rt").load(resolve_references(f, overrides))
        except Exception as err:  # noqa: BLE001 -- a missing or broken included file
            return Unresolved(f"!include:{name} cannot be read ({_first_line(err)})")


def _first_line(err):
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def resolve_hyperparams(path):
    """The tree of the hyperpyyaml file ``path`` with every reference resolved
    (nothing built; ``!new:``/``!name:`` nodes keep their tags) and every node
    that cannot be resolved replaced by an :class:`Unresolved`."""
    from ruamel.yaml import YAML

    try:
        with open(path, encoding="utf-8") as f:
            doc = YAML(typ="rt").load(f)
    except Exception as err:  # noqa: BLE001 -- YAML errors of any kind
        raise CheckpointFormatError(f"{path}: not readable YAML ({_first_line(err)})") from None
    if not isinstance(doc, dict):
        raise CheckpointFormatError(f"{path}: not a SpeechBrain hyperparams file")
    return _Resolver(doc, os.path.dirname(os.path.abspath(path))).node(doc)


def read_hyperparams(path):
    """The settings of a SpeechBrain BEST-RQ run that tensor shapes cannot
    tell, from its ``hyperparams.yaml`` resolved by :func:`resolve_hyperparams`
    (``!new:`` objects are read as mappings, nothing is built). Returns a flat
    dict (keys absent when the file does not name them): ``attention_type``,
    ``degree``, ``expand``, ``nhead``, ``d_model``, ``num_layers``, ``d_ffn``,
    ``kernel_size``, ``dropout``, ``activation`` (dotted name), ``causal``,
    ``cnn_*``, ``norm_type``, ``n_mels``, ``sample_rate``, ``n_fft``,
    ``hop_length``, ``streaming``. TransformerASR's own defaults fill the
    Conformer settings its block does not name.

    Raises
    ------
    CheckpointFormatError
        One line naming the file and the key, when a setting the file names
        cannot be resolved (a placeholder, a missing or circular reference).
    """
    doc = resolve_hyperparams(path)

    def named(key, value):
        if isinstance(value, Unresolved):
            raise CheckpointFormatError(
                f"{path}: {key} cannot be resolved: {value.reason} (correct the file, or move it away and pass "
                "the settings as options)"
            )
        return value

    def block(tag_part, key):
        """``(name, mapping)`` of the object whose class contains ``tag_part`` (else the key ``key``)."""
        for name, value in doc.items():
            if isinstance(value, dict) and tag_part in _tag(value):
                return name, value
        value = named(key, doc.get(key))
        return key, (value if isinstance(value, dict) else {})

    transformer = block("TransformerASR.TransformerASR", "Transformer")
    cnn = block("ConvolutionFrontEnd", "CNN")
    normalize = block("InputNormalization", "normalize")
    fbank = block("features.Fbank", "compute_features")
    doc = (None, doc)
    found = {}

    def take(name, *sources):
        for (where, source), key in sources:
            if key in source:
                value = _value(named(f"{where}[{key}]" if where else key, source[key]))
                if value is not None:
                    found[name] = value
                    return

    take("attention_type", (transformer, "attention_type"))
    take("degree", (transformer, "degree"), (doc, "degree"))
    take("expand", (transformer, "expand"), (doc, "expand"))
    take("nhead", (transformer, "nhead"), (doc, "nhead"))
    take("d_model", (transformer, "d_model"), (doc, "d_model"))
    take("num_layers", (transformer, "num_encoder_layers"), (doc, "num_encoder_layers"))
    take("d_ffn", (transformer, "d_ffn"), (doc, "d_ffn"))
    take("kernel_size", (transformer, "kernel_size"))
    take("dropout", (transformer, "dropout"), (doc, "transformer_dropout"))
    take("activation", (transformer, "conformer_activation"))
    take("causal", (transformer, "causal"))
    if transformer[1]:
        found.setdefault("kernel_size", 31)  # TransformerASR's defaults
        found.setdefault("activation", "speechbrain.nnet.activations.Swish")
        found.setdefault("causal", True)  # what SpeechBrain 1.x assumes (with a warning) when unset
    take("cnn_channels", (cnn, "out_channels"))
    take("cnn_kernel_sizes", (cnn, "kernel_sizes"))
    take("cnn_strides", (cnn, "strides"))
    take("cnn_num_blocks", (cnn, "num_blocks"))
    take("cnn_layers_per_block", (cnn, "num_layers_per_block"))
    take("cnn_residuals", (cnn, "residuals"))
    if normalize[1]:  # InputNormalization's default type: global
        found["norm_type"] = _value(named(f"{normalize[0]}[norm_type]", normalize[1].get("norm_type", "global")))
    take("n_mels", (fbank, "n_mels"), (doc, "n_mels"))
    take("sample_rate", (fbank, "sample_rate"), (doc, "sample_rate"))
    take("n_fft", (fbank, "n_fft"), (doc, "n_fft"))
    take("hop_length", (fbank, "hop_length"), (doc, "hop_length"))
    take("streaming", (doc, "streaming"))
    if "activation" in found:
        found["activation"] = _dotted_class_name(found["activation"], path)
    return found


def _dotted_class_name(name, where):
    """``torch.nn.GELU`` -> ``torch.nn.modules.activation.GELU`` (what
    :class:`pom.recipe.checkpoints.EncoderConfig` writes for a class)."""
    obj = import_dotted(name, where)
    return f"{obj.__module__}.{obj.__qualname__}"
