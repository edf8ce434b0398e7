"""A conversion checked against the model it came from.

After the tensors are renamed, the source model is built with SpeechBrain's
own classes, loaded with the source tensors, and both models encode the same
random unpadded batch of features ``x``:

.. math::

    \\delta = \\max_{b, t, c} \\, \\lvert E_{\\text{source}}(x) - E_{\\text{converted}}(x) \\rvert
    \\le 10^{-5}

(float32, the tolerance of the export's reload check), or the conversion is
refused and nothing is written. The source model comes,
in order of preference, from

1. the run's hyperparams file: its ``ConvolutionFrontEnd`` and
   ``TransformerASR`` blocks, references resolved, built by hyperpyyaml
   itself, when stock SpeechBrain can build them (SpeechBrain's BEST-RQ runs):
   the file's own words, independent of how the converter read them;
2. the conversion's settings: SpeechBrain's ``ConvolutionFrontEnd`` and
   ``TransformerASR`` Conformer with the source's token mixer (a format module's
   ``source_mixer``: for the PoM authors' checkpoints, whose patched
   SpeechBrain is not installed, their equation,
   :class:`pom.convert.pom4speech.SourcePoM`).

:func:`verify_conversion` returns the record written into
``converted_from.json`` (``verification``: how the source was built, the
batch, the difference).

Example
-------
>>> from pom.convert import speechbrain_bestrq
>>> from pom.convert.speechbrain_conformer import rename_tensors
>>> config = {"mixer": "relposmhaxl", "mixer_options": {"nhead": 2, "dropout": 0.1}, "positional_encoding": None,
...           "d_model": 16, "num_layers": 1, "d_ffn": 32, "kernel_size": 3, "causal": False,
...           "activation": "torch.nn.modules.activation.GELU", "cnn_channels": [4, 2], "cnn_output_size": 40,
...           "n_mels": 80}
>>> source, how = source_from_settings(config, "RelPosMHAXL")
>>> state = source.state_dict()
>>> converted = rename_tensors(state, speechbrain_bestrq.RENAMES, "model.ckpt")
>>> record = verify_conversion(state, converted, config, speechbrain_bestrq, None, "model.ckpt")
>>> record["max_abs_difference"] <= TOLERANCE, record["hyperparams_not_built"]
(True, 'no hyperparams file')

Authors
 * pom-speech contributors 2025
"""

import io

import torch

from pom.convert.layout import CheckpointFormatError, build_pretrained_model, import_dotted
from pom.convert.speechbrain_conformer import IGNORED
from pom.convert.speechbrain_yaml import Unresolved

#: Largest difference accepted between the two encoders (float32; SpeechBrain's attention softmax is float32 anyway).
TOLERANCE = 1e-5
#: The random batch: utterances and feature frames (100 per second).
BATCH, FRAMES = 2, 120


def _contains_unresolved(node):
    if isinstance(node, Unresolved):
        return True
    if isinstance(node, dict):
        return any(_contains_unresolved(v) for v in node.values())
    if isinstance(node, list):
        return any(_contains_unresolved(v) for v in node)
    return False


def _block(tree, class_suffix):
    return next(
        (v for v in tree.values() if isinstance(v, dict) and str(getattr(v.tag, "value", "")).endswith(class_suffix)),
        None,
    )


def source_from_hyperparams(tree):
    """``(model, how)`` built by hyperpyyaml from the resolved file's CNN and
    TransformerASR blocks, or ``(None, why not)``."""
    from hyperpyyaml import load_hyperpyyaml
    from ruamel.yaml import YAML
    from speechbrain.lobes.models.transformer.TransformerASR import EncoderWrapper

    if tree is None:
        return None, "no hyperparams file"
    blocks = {"cnn": _block(tree, ".ConvolutionFrontEnd"), "transformer": _block(tree, ".TransformerASR")}
    if any(block is None for block in blocks.values()):
        return None, "the hyperparams file has no ConvolutionFrontEnd and TransformerASR blocks"
    if _contains_unresolved(blocks):
        return None, "a setting of its model blocks cannot be resolved"
    text = io.StringIO()
    YAML(typ="rt").dump(blocks, text)
    try:
        built = load_hyperpyyaml(text.getvalue())
    except Exception as err:  # noqa: BLE001 -- classes this SpeechBrain lacks, or arguments it refuses
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return None, f"SpeechBrain here cannot build the file's model blocks ({type(err).__name__}: {first})"
    model = torch.nn.ModuleList([built["cnn"], EncoderWrapper(built["transformer"])])
    return model, "the hyperparams file's CNN and TransformerASR blocks, built by hyperpyyaml"


def source_from_settings(config, attention_type, source_mixer=None):
    """SpeechBrain's ``[ConvolutionFrontEnd, EncoderWrapper(TransformerASR)]``
    from a conversion's settings; ``source_mixer(config)`` replaces each
    layer's ``mha_layer`` when SpeechBrain lacks the source's mixer."""
    from speechbrain.lobes.models.transformer.TransformerASR import EncoderWrapper, TransformerASR

    from pom.convert.layout import cnn_front_end

    cnn = cnn_front_end(config)
    activation = import_dotted(config["activation"])
    absolute = config["positional_encoding"] or attention_type == "RelPosMHAXL"  # RelPosMHAXL: relative ones
    transformer = TransformerASR(
        tgt_vocab=1,
        input_size=config["cnn_output_size"],
        d_model=config["d_model"],
        nhead=config["mixer_options"].get("nhead", 1),
        num_encoder_layers=config["num_layers"],
        num_decoder_layers=0,
        d_ffn=config["d_ffn"],
        kernel_size=config["kernel_size"],
        activation=activation,
        conformer_activation=activation,
        encoder_module="conformer",
        attention_type=attention_type,
        positional_encoding="fixed_abs_sine" if absolute else None,
        normalize_before=True,
        causal=config["causal"],
    )
    how = f"SpeechBrain's ConvolutionFrontEnd and TransformerASR ({attention_type}) from the conversion's settings"
    if source_mixer is not None:
        for layer in transformer.encoder.layers:
            layer.mha_layer = source_mixer(config)
        how = f"{how}, token mixer {type(layer.mha_layer).__module__}.{type(layer.mha_layer).__name__}"
    return torch.nn.ModuleList([cnn, EncoderWrapper(transformer)]), how


def _load_source(model, state, how, path):
    kept = {k: v for k, v in state.items() if not k.startswith(IGNORED)}
    missing, unexpected = model.load_state_dict(kept, strict=False)
    missing = [k for k in missing if not k.startswith(IGNORED)]
    if missing or unexpected:
        names = (missing + unexpected)[:3]
        raise CheckpointFormatError(
            f"{path}: the source tensors do not fit the source model ({how}): "
            f"{len(missing)} missing, {len(unexpected)} unexpected (e.g. {', '.join(names)})"
        )


def verify_conversion(state, converted, config, reader, tree, path):
    """Compares the source model (``state``, SpeechBrain's layout) with the
    converted one (``converted``, ours); returns the record of the comparison.

    Arguments
    ---------
    state, converted : dict
        The source and converted tensors.
    config : dict
        The converted encoder's configuration.
    reader : module
        The source format's module (``ATTENTION_TYPE``, ``SOURCE_ATTENTION``,
        ``source_mixer``).
    tree : dict or None
        The resolved hyperparams file (:func:`pom.convert.speechbrain_yaml.resolve_hyperparams`).
    path : str
        The source ``model.ckpt`` (for messages).

    Raises
    ------
    CheckpointFormatError
        One line, when the outputs differ by more than :data:`TOLERANCE`.
    """
    source, how = source_from_hyperparams(tree)
    why_not = None if source is not None else how
    if source is None:
        source, how = source_from_settings(config, reader.SOURCE_ATTENTION, reader.source_mixer)
    _load_source(source, state, how, path)
    ours = build_pretrained_model(config)
    ours.load_state_dict(converted, strict=True)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, FRAMES, config["n_mels"], generator=g)
    lengths = torch.ones(BATCH)
    with torch.no_grad():
        source, ours = source.eval(), ours.eval()
        expected = source[1](source[0](x), lengths)
        got = ours[1](ours[0](x), lengths)
    if got.shape != expected.shape:
        raise CheckpointFormatError(
            f"{path}: the converted encoder gives {tuple(got.shape)}, the source model ({how}) {tuple(expected.shape)}"
        )
    difference = float((got - expected).abs().max())
    if not difference <= TOLERANCE:
        raise CheckpointFormatError(
            f"{path}: the converted encoder's output differs from the source model's by {difference:.2e} "
            f"(max abs, tolerance {TOLERANCE:g}) on a random unpadded batch; source: {how}; nothing written"
        )
    record = {
        "source_model": how,
        "batch": [BATCH, FRAMES, config["n_mels"]],
        "dtype": "float32",
        "max_abs_difference": difference,
        "tolerance": TOLERANCE,
    }
    if why_not is not None:
        record["hyperparams_not_built"] = why_not
    return record
