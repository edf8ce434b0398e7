"""What a SpeechBrain run's ``hyperparams.yaml`` says that tensor shapes cannot.

SpeechBrain writes the resolved YAML of every run beside its checkpoints;
:func:`read_hyperparams` reads the few settings a conversion needs (activation,
dropout, causality, normalisation type, the PoM degree and expansion, and the
sizes, which are checked against the tensors) without building anything.

Example
-------
>>> import tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "hyperparams.yaml")
>>> _ = open(path, "w").write("d_model: 16\\nnormalize: !new:speechbrain.processing.features.InputNormalization\\n"
...                           "    norm_type: sentence\\n")
>>> read_hyperparams(path)
{'d_model': 16, 'norm_type': 'sentence'}

Authors
 * pom-speech contributors 2025
"""

import ast
import os

from pom.convert.layout import CheckpointFormatError, import_dotted


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
    """A YAML value as plain Python: tuples written ``(a, b)`` become tuples,
    ``!name:x.y`` becomes ``"x.y"``; unresolved references become None."""
    tag = _tag(node)
    if tag.startswith("!name:"):
        return tag[len("!name:") :]
    if tag == "!ref":
        return None
    if hasattr(node, "value") and not isinstance(node, (str, bytes)):  # a tagged scalar (hyperpyyaml's !tuple ...)
        node = node.value
    if isinstance(node, str) and node.startswith("(") and node.endswith(")"):
        try:
            return tuple(ast.literal_eval(node))
        except (ValueError, SyntaxError):
            return node
    return node


def read_hyperparams(path):
    """The settings of a SpeechBrain BEST-RQ run that tensor shapes cannot
    tell, from its resolved ``hyperparams.yaml`` (``!new:`` objects are read
    as mappings, nothing is built). Returns a flat dict (keys absent when the
    file does not say): ``attention_type``, ``degree``, ``expand``, ``nhead``,
    ``d_model``, ``num_layers``, ``d_ffn``, ``kernel_size``, ``dropout``,
    ``activation`` (dotted name), ``causal``,
    ``cnn_*``, ``norm_type``, ``n_mels``, ``sample_rate``, ``n_fft``,
    ``hop_length``, ``streaming``.
    """
    from ruamel.yaml import YAML

    try:
        with open(path, encoding="utf-8") as f:
            doc = YAML(typ="rt").load(f)
    except Exception as err:  # noqa: BLE001 -- YAML errors of any kind
        first = (str(err).strip().splitlines() or [""])[0]
        raise CheckpointFormatError(f"{path}: not readable YAML ({first})") from None
    if not isinstance(doc, dict):
        raise CheckpointFormatError(f"{path}: not a SpeechBrain hyperparams file")

    def block(tag_part, key):
        for value in doc.values():
            if isinstance(value, dict) and tag_part in _tag(value):
                return value
        value = doc.get(key)
        return value if isinstance(value, dict) else {}

    transformer = block("TransformerASR.TransformerASR", "Transformer")
    cnn = block("ConvolutionFrontEnd", "CNN")
    normalize = block("InputNormalization", "normalize")
    fbank = block("features.Fbank", "compute_features")
    found = {}

    def take(name, *sources):
        for source, key in sources:
            if key in source and _value(source[key]) is not None:
                found[name] = _value(source[key])
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
    if transformer:
        found.setdefault("kernel_size", 31)  # TransformerASR's defaults
        found.setdefault("activation", "speechbrain.nnet.activations.Swish")
        found.setdefault("causal", True)  # what SpeechBrain 1.x assumes (with a warning) when unset
    take("cnn_channels", (cnn, "out_channels"))
    take("cnn_kernel_sizes", (cnn, "kernel_sizes"))
    take("cnn_strides", (cnn, "strides"))
    take("cnn_num_blocks", (cnn, "num_blocks"))
    take("cnn_layers_per_block", (cnn, "num_layers_per_block"))
    take("cnn_residuals", (cnn, "residuals"))
    if normalize:
        found["norm_type"] = _value(normalize.get("norm_type", "global"))  # InputNormalization's default
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
