"""Imports pre-trained BEST-RQ checkpoints made elsewhere, so that fine-tuning
here can start from them.

Our pre-trained layout (what :func:`pom.finetune.find_pretrained` returns and
the fine-tuning recipe loads) is one folder with

* ``model.ckpt``: the state dict of ``torch.nn.ModuleList([CNN, encoder])``,
  SpeechBrain's ``ConvolutionFrontEnd`` and :class:`pom.encoder.MixerEncoder`;
* ``normalize.ckpt``: the state of SpeechBrain's ``InputNormalization``
  (``{"count", "glob_mean", "glob_std"}``, empty statistics for per-utterance
  normalisation);
* ``encoder_config.json``: the architecture, the keys of ``encoder_config`` in
  ``hparams/pretrain/base.yaml``.

:func:`convert_checkpoint` writes that layout (plus ``converted_from.json``,
the provenance) from

* a run of SpeechBrain's BEST-RQ recipe
  (``recipes/LibriSpeech/self-supervised-learning/BEST-RQ``, SpeechBrain 1.x):
  ``model.ckpt`` holds ``[CNN, EncoderWrapper(TransformerASR)]`` with a
  ``RelPosMHAXL`` Conformer; it becomes the ``relposmhaxl`` mixer
  (:func:`pom.encoder.convert_speechbrain_conformer_state_dict`);
* a run of the PoM authors' code (EvaJF/pom4speech, SpeechBrain 1.0.3 with
  ``attention_type: PoM``): each layer's ``mha_layer.mh_pom.{po_proj, se_proj,
  ag_proj}`` and ``mha_layer.layer_norm`` become our
  :class:`pom.mixers.PolynomialMixer`'s ``polynomial_proj``,
  ``selection_proj``, ``output_proj`` and ``norm`` (the same equation, so the
  same output on unpadded input; on padded input ours averages the valid
  frames only, theirs also the zeroed padded frames).

A run means its output folder (the latest complete ``save/CKPT+*``), its
``save/`` folder or one ``CKPT+*`` folder. Sizes are read from the tensor shapes
(``d_model``, layers, ``d_ffn``, kernel size, heads from ``pos_bias_u``, CNN
channels, mel bins from the CNN's LayerNorm); what shapes cannot tell
(activation, dropout, causality, the normalisation type, the PoM degree ``k``
versus expansion ``D``, of which the shapes give only the product) comes from
the run's ``hyperparams.yaml`` when there is one, else from the options, else
from the recipes' defaults (GELU, dropout 0.1, not causal, 16 kHz, 400-point
FFT, 10 ms hop). A folder already in our layout is returned unchanged.

Normalisation: SpeechBrain's ``InputNormalization`` saves
``{"count", "glob_mean", "glob_std"}`` (1.0.x adds empty per-speaker
dictionaries); ``glob_std`` is a standard deviation, not a variance. Statistics
(``count > 0``) mean ``norm_type: global`` (the PoM authors' setting);
none mean per-utterance normalisation (``sentence``, SpeechBrain 1.1's
BEST-RQ recipe), unless ``hyperparams.yaml`` names the type.

Example
-------
>>> import os, tempfile, torch
>>> from speechbrain.lobes.models.convolution import ConvolutionFrontEnd
>>> from speechbrain.lobes.models.transformer.TransformerASR import EncoderWrapper, TransformerASR
>>> from speechbrain.processing.features import InputNormalization
>>> cnn = ConvolutionFrontEnd((8, 10, 80), num_blocks=2, num_layers_per_block=1, out_channels=(8, 4),
...                           kernel_sizes=(3, 3), strides=(2, 2), residuals=(False, False))
>>> asr = TransformerASR(tgt_vocab=10, input_size=80, d_model=16, nhead=2, num_encoder_layers=1,
...                      num_decoder_layers=0, d_ffn=32, kernel_size=5, activation=torch.nn.GELU,
...                      conformer_activation=torch.nn.GELU, encoder_module="conformer",
...                      attention_type="RelPosMHAXL", normalize_before=True, causal=False)
>>> run = tempfile.mkdtemp()
>>> torch.save(torch.nn.ModuleList([cnn, EncoderWrapper(asr)]).state_dict(), os.path.join(run, "model.ckpt"))
>>> InputNormalization(norm_type="sentence")._save(os.path.join(run, "normalize.ckpt"))
>>> out = convert_checkpoint(run, os.path.join(run, "imported"))
>>> sorted(os.listdir(out))
['converted_from.json', 'encoder_config.json', 'model.ckpt', 'normalize.ckpt']
>>> config = EncoderConfig.read(os.path.join(out, "encoder_config.json"))
>>> config["mixer"], config["mixer_options"], config["d_model"], config["kernel_size"], config["norm_type"]
('relposmhaxl', {'dropout': 0.1, 'nhead': 2}, 16, 5, 'sentence')
>>> detect_format(out)
'pom'

Command line::

    python -m pom.convert SRC OUT [--degree K] [--expansion D] [--overwrite]

Authors
 * pom-speech contributors 2025
"""

import argparse
import ast
import glob
import importlib
import json
import os
import re
import shutil
import sys
import uuid

import torch
from speechbrain.utils.checkpoints import Checkpointer
from speechbrain.utils.logger import get_logger

from pom.bestrq import EncoderConfig
from pom.encoder import MixerEncoder, convert_speechbrain_conformer_state_dict
from pom.positions import sinusoidal_positions

logger = get_logger(__name__)

#: Layout names returned by :func:`detect_format`.
OURS, SPEECHBRAIN_BESTRQ, POM4SPEECH = "pom", "speechbrain_bestrq", "pom4speech"
FORMAT_NAMES = {
    OURS: "pom-speech checkpoint",
    SPEECHBRAIN_BESTRQ: "SpeechBrain BEST-RQ checkpoint (RelPosMHAXL Conformer)",
    POM4SPEECH: "PoM authors' (pom4speech) BEST-RQ checkpoint",
}
PROVENANCE = "converted_from.json"
MODEL, NORMALIZE, CONFIG = "model.ckpt", "normalize.ckpt", "encoder_config.json"

#: What the recipes use where a checkpoint cannot tell (SpeechBrain's BEST-RQ recipe, the PoM authors').
DEFAULTS = {
    "activation": "torch.nn.modules.activation.GELU",
    "dropout": 0.1,
    "causal": False,
    "sample_rate": 16000,
    "n_fft": 400,
    "hop_length": 10,
}
#: The CNN front end of both recipes and of ours (hparams/pretrain/base.yaml); only the channels vary.
CNN_BLOCKS, CNN_KERNEL, CNN_STRIDE = 2, 3, 2

_SRC = "1.transformer."
_LAYER = re.compile(r"^1\.transformer\.encoder\.layers\.(\d+)\.")
_IGNORED = (  # constant tables: our encoder computes them for any length
    "1.transformer.positional_encoding.",
    "1.transformer.positional_encoding_decoder.",
)
_POM_RENAMES = (
    (".mha_layer.mh_pom.po_proj.", ".mixer.polynomial_proj."),
    (".mha_layer.mh_pom.se_proj.", ".mixer.selection_proj."),
    (".mha_layer.mh_pom.ag_proj.", ".mixer.output_proj."),
    (".mha_layer.layer_norm.", ".mixer.norm."),
)


class CheckpointFormatError(ValueError):
    """A checkpoint that cannot be imported; the message is one line naming the file."""


# ---------------------------------------------------------------------- finding the files
def resolve_checkpoint_dir(path):
    """The folder holding ``model.ckpt`` that ``path`` designates.

    ``path`` may be that folder (a ``CKPT+*`` folder, our ``pretrained/``
    export, a converted folder), a ``save/`` folder of checkpoints or a run's
    output folder (its latest complete ``save/CKPT+*``, else ``pretrained/``).

    Raises
    ------
    FileNotFoundError
        One line naming ``path`` and what it holds.
    """
    path = os.path.abspath(os.path.expanduser(str(path)))
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path} does not exist (give a run's output folder, its save/ folder or a CKPT+* folder)")
    if os.path.isfile(os.path.join(path, MODEL)):
        return path
    for save in (path, os.path.join(path, "save")):
        if glob.glob(os.path.join(save, "CKPT+*")):
            ckpt = Checkpointer(save).find_checkpoint()  # the latest complete checkpoint
            if ckpt is not None and os.path.isfile(os.path.join(str(ckpt.path), MODEL)):
                return str(ckpt.path)
    if os.path.isfile(os.path.join(path, "pretrained", MODEL)):
        return os.path.join(path, "pretrained")
    found = sorted(os.listdir(path))
    listing = ", ".join(found[:8]) + (" ..." if len(found) > 8 else "") if found else "nothing"
    raise FileNotFoundError(
        f"{path} holds no pre-trained model (expected model.ckpt, save/CKPT+*/model.ckpt or pretrained/model.ckpt; "
        f"found {listing})"
    )


def _load(path, what):
    """``torch.load`` on the CPU (memory-mapped when possible), with a one-line error."""
    for mmap in (True, False):
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except Exception as err:  # noqa: BLE001 -- any failure is reported the same way
            if mmap:
                continue
            first = (str(err).strip().splitlines() or [""])[0][:200]
            raise CheckpointFormatError(f"{path}: cannot be read as {what} ({type(err).__name__}: {first})") from None
    return None


def _load_state_dict(path):
    state = _load(path, "a PyTorch state dict")
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointFormatError(f"{path}: not a state dict of tensors (found {type(state).__name__})")
    return state


def _format_of_keys(keys):
    """Layout of a ``model.ckpt`` from its keys, or None."""
    if any(k.startswith("1.input_projection.") for k in keys) and any(k.startswith("1.encoder.layers.") for k in keys):
        return OURS
    if any(_LAYER.match(k) for k in keys):
        if any(".mha_layer.mh_pom." in k for k in keys):
            return POM4SPEECH
        if any(k.endswith(".mha_layer.pos_bias_u") for k in keys):
            return SPEECHBRAIN_BESTRQ
    return None


def _describe_keys(path, keys):
    """One line saying what a ``model.ckpt`` that fits no layout holds."""
    keys = list(keys)
    mixer_of = re.compile(r"\.layers\.\d+\.(mha_layer(?:\.[a-z_]+)?)\.")
    mixers = sorted({m.group(1) for m in map(mixer_of.search, keys) if m})
    if mixers and any(_LAYER.match(k) for k in keys):
        return (
            f"{path}: a SpeechBrain Conformer whose token mixer ({', '.join(mixers)}) is neither RelPosMHAXL "
            "(SpeechBrain's BEST-RQ) nor the PoM authors' mh_pom: not supported"
        )
    shown = ", ".join(keys[:3]) + (" ..." if len(keys) > 3 else "")
    return (
        f"{path}: not a BEST-RQ [CNN, encoder] checkpoint of pom-speech, SpeechBrain or the PoM authors "
        f"({len(keys)} tensors, e.g. {shown})"
    )


def detect_format(ckpt_dir):
    """Returns the layout of the checkpoint folder ``ckpt_dir``: ``"pom"``
    (ours), ``"speechbrain_bestrq"`` or ``"pom4speech"``.

    Raises
    ------
    CheckpointFormatError
        When ``model.ckpt`` fits none of them (the message says what it holds).
    """
    path = os.path.join(ckpt_dir, MODEL)
    if not os.path.isfile(path):
        raise CheckpointFormatError(f"{ckpt_dir}: no {MODEL}")
    keys = list(_load_state_dict(path))
    fmt = _format_of_keys(keys)
    if fmt is None:
        raise CheckpointFormatError(_describe_keys(path, keys))
    return fmt


# ---------------------------------------------------------------------- hyperparams.yaml of a run
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
        return tag[len("!name:"):]
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
    :class:`pom.bestrq.EncoderConfig` writes for a class)."""
    obj = import_dotted(name, where)
    return f"{obj.__module__}.{obj.__qualname__}"


def import_dotted(name, where="encoder_config.json"):
    """The object a dotted name designates (``torch.nn.modules.activation.GELU``)."""
    parts = str(name).split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
            return obj
        except AttributeError:
            break
    raise CheckpointFormatError(f"{where}: activation {name!r} cannot be imported")


# ---------------------------------------------------------------------- building our model
def build_pretrained_model(config):
    """``torch.nn.ModuleList([CNN, MixerEncoder])`` built from an encoder
    configuration (the dict of ``encoder_config.json``) as
    ``hparams/pretrain/base.yaml`` builds them (dropout 0.1).

    Example
    -------
    >>> config = {"mixer": "pom", "mixer_options": {"degree": 2, "expansion": 1}, "positional_encoding": None,
    ...           "d_model": 8, "num_layers": 1, "d_ffn": 16, "kernel_size": 3, "causal": False,
    ...           "activation": "torch.nn.modules.activation.GELU", "cnn_channels": [4, 2],
    ...           "cnn_output_size": 40, "n_mels": 80}
    >>> model = build_pretrained_model(config).eval()
    >>> model[1](model[0](torch.randn(2, 16, 80))).shape
    torch.Size([2, 4, 8])
    """
    from speechbrain.lobes.models.convolution import ConvolutionFrontEnd

    cnn = ConvolutionFrontEnd(
        input_shape=[8, 10, config["n_mels"]],
        num_blocks=CNN_BLOCKS,
        num_layers_per_block=1,
        out_channels=tuple(config["cnn_channels"]),
        kernel_sizes=(CNN_KERNEL,) * CNN_BLOCKS,
        strides=(CNN_STRIDE,) * CNN_BLOCKS,
        residuals=(False,) * CNN_BLOCKS,
    )
    encoder = MixerEncoder(
        input_size=config["cnn_output_size"],
        d_model=config["d_model"],
        num_layers=config["num_layers"],
        d_ffn=config["d_ffn"],
        mixer=config["mixer"],
        mixer_options=config.get("mixer_options") or {},
        kernel_size=config["kernel_size"],
        activation=import_dotted(config["activation"]),
        positional_encoding=config.get("positional_encoding"),
        causal=config.get("causal", False),
    )
    return torch.nn.ModuleList([cnn, encoder])


# ---------------------------------------------------------------------- the conversion
class _Inference:
    """Collects the configuration and where each value came from."""

    def __init__(self, model_path, hparams, hparams_path):
        self.model_path, self.hparams, self.hparams_path = model_path, hparams, hparams_path
        self.config, self.origin = {}, {}

    def shape(self, key, value, hparams_key=None):
        """A value read from the tensors, checked against hyperparams.yaml."""
        said = self.hparams.get(hparams_key or key)
        if said is not None and _normal(said) != _normal(value):
            raise CheckpointFormatError(
                f"{self.model_path}: {key} is {value!r} in the tensors but {said!r} in {self.hparams_path} "
                "(is that file from another run?)"
            )
        self.config[key], self.origin[key] = value, "tensor shapes"

    def setting(self, key, hparams_key=None, default=None, option=None):
        """A value shapes cannot tell: option, else hyperparams.yaml, else the recipes' default."""
        if option is not None:
            self.config[key], self.origin[key] = option, "options"
        elif self.hparams.get(hparams_key or key) is not None:
            self.config[key], self.origin[key] = self.hparams[hparams_key or key], "hyperparams.yaml"
        else:
            self.config[key], self.origin[key] = default, "default"
        return self.config[key]


def _normal(value):
    return list(value) if isinstance(value, (tuple, list)) else value


def _infer_cnn(state, inf):
    """CNN channels and mel bins from SpeechBrain's ``ConvolutionFrontEnd`` tensors."""
    path = inf.model_path
    channels, freqs = [], []
    for block in range(CNN_BLOCKS + 1):
        weight = state.get(f"0.convblock_{block}.convs.conv_0.conv.weight")
        norm = state.get(f"0.convblock_{block}.convs.norm_0.norm.weight")
        if weight is None:
            break
        if weight.dim() != 4 or tuple(weight.shape[2:]) != (CNN_KERNEL, CNN_KERNEL) or norm is None or norm.dim() != 2:
            raise CheckpointFormatError(
                f"{path}: CNN block {block} is not a {CNN_KERNEL}x{CNN_KERNEL} conv + LayerNorm "
                f"(conv weight {tuple(weight.shape)}); pom-speech uses SpeechBrain's BEST-RQ front end"
            )
        channels.append(int(weight.shape[0]))
        freqs.append(int(norm.shape[0]))
    if len(channels) != CNN_BLOCKS:
        raise CheckpointFormatError(
            f"{path}: the CNN front end has {len(channels)} blocks, pom-speech's (SpeechBrain's BEST-RQ) has {CNN_BLOCKS}"
        )
    for name, expected in (
        ("cnn_num_blocks", CNN_BLOCKS),
        ("cnn_layers_per_block", 1),
        ("cnn_strides", (CNN_STRIDE,) * CNN_BLOCKS),
        ("cnn_kernel_sizes", (CNN_KERNEL,) * CNN_BLOCKS),
        ("cnn_residuals", (False,) * CNN_BLOCKS),
    ):
        said = inf.hparams.get(name)
        if said is not None and _normal(said) != _normal(expected):
            raise CheckpointFormatError(
                f"{inf.hparams_path}: CNN {name[4:]} {said!r}, pom-speech's front end (SpeechBrain's BEST-RQ) has {expected!r}"
            )
    inf.shape("cnn_channels", channels)
    inf.shape("n_mels", inf.hparams.get("n_mels") or CNN_STRIDE * freqs[0])
    inf.origin["n_mels"] = "hyperparams.yaml" if inf.hparams.get("n_mels") else "CNN LayerNorm shape"
    inf.shape("cnn_output_size", freqs[-1] * channels[-1])


def _infer_encoder(state, fmt, inf, degree, expansion):
    path = inf.model_path
    proj = state.get(_SRC + "custom_src_module.layers.0.w.weight")
    if proj is None:
        raise CheckpointFormatError(f"{path}: no input projection ({_SRC}custom_src_module.layers.0.w.weight)")
    d_model = int(proj.shape[0])
    if int(proj.shape[1]) != inf.config["cnn_output_size"]:
        raise CheckpointFormatError(
            f"{path}: the input projection takes {int(proj.shape[1])} features but the CNN gives {inf.config['cnn_output_size']}"
        )
    inf.shape("d_model", d_model)
    layers = sorted({int(m.group(1)) for k in state for m in [_LAYER.match(k)] if m})
    if layers != list(range(len(layers))):
        raise CheckpointFormatError(f"{path}: encoder layers {layers} are not numbered 0..N-1")
    inf.shape("num_layers", len(layers))
    layer0 = _SRC + "encoder.layers.0."
    inf.shape("d_ffn", int(state[layer0 + "ffn_module1.1.ffn.0.weight"].shape[0]))
    inf.shape("kernel_size", int(state[layer0 + "convolution_module.conv.weight"].shape[2]))
    inf.setting("activation", default=DEFAULTS["activation"])
    inf.setting("causal", default=DEFAULTS["causal"])
    attention = inf.hparams.get("attention_type")
    expected = {SPEECHBRAIN_BESTRQ: "RelPosMHAXL", POM4SPEECH: "PoM"}[fmt]
    if attention is not None and attention != expected:
        raise CheckpointFormatError(
            f"{inf.hparams_path}: attention_type {attention!r}, but the tensors of {path} are {expected}'s"
        )
    if fmt == SPEECHBRAIN_BESTRQ:
        bias_u = state[layer0 + "mha_layer.pos_bias_u"]  # [head_dim, nhead]
        nhead = int(bias_u.shape[1])
        if int(bias_u.shape[0]) * nhead != d_model:
            raise CheckpointFormatError(f"{path}: pos_bias_u {tuple(bias_u.shape)} does not fit d_model {d_model}")
        inf.shape("nhead", nhead)
        dropout = inf.setting("dropout", default=DEFAULTS["dropout"])
        inf.config["mixer"], inf.origin["mixer"] = "relposmhaxl", "tensor names"
        inf.config["mixer_options"] = {"nhead": nhead, "dropout": dropout}
        inf.config["positional_encoding"] = None  # RelPosMHAXL brings its own relative positions
    else:
        if inf.config["causal"]:
            raise CheckpointFormatError(
                f"{inf.hparams_path}: causal: True with the authors' PoM (which has no causal mode) cannot be reproduced here"
            )
        width = int(state[layer0 + "mha_layer.mh_pom.po_proj.weight"].shape[0])
        if width % d_model:
            raise CheckpointFormatError(f"{path}: po_proj gives {width} values, not a multiple of d_model {d_model}")
        degree, expansion = _degree_and_expansion(width // d_model, inf, degree, expansion)
        options = {"degree": degree, "expansion": expansion}
        if layer0 + "mha_layer.mh_pom.po_proj.bias" not in state:
            options["bias"] = False
        inf.config["mixer"], inf.origin["mixer"] = "pom", "tensor names"
        inf.config["mixer_options"] = options
        pe = state.get(_SRC + "positional_encoding.pe")
        if pe is not None:
            n = min(int(pe.shape[1]), 256)
            if not torch.allclose(pe[0, :n].float(), sinusoidal_positions(n, d_model)[0], atol=1e-4):
                raise CheckpointFormatError(f"{path}: positional_encoding.pe is not the fixed sinusoidal table")
        inf.config["positional_encoding"] = "fixed_abs_sine" if pe is not None else None
        inf.origin["positional_encoding"] = "tensor names"


def _degree_and_expansion(product, inf, degree, expansion):
    """``k`` and ``D`` with ``k * D = product``: options, else hyperparams.yaml (``degree``, ``expand``)."""
    where = "options"
    if degree is None and expansion is None:
        degree, expansion, where = inf.hparams.get("degree"), inf.hparams.get("expand"), "hyperparams.yaml"
    if degree is None and expansion is None:
        raise CheckpointFormatError(
            f"{inf.model_path}: PoM degree and expansion cannot be told apart from the tensor shapes "
            f"(degree x expansion = {product}) and the run has no hyperparams.yaml: pass degree=K "
            "(python -m pom.convert ... --degree K)"
        )
    degree = int(degree) if degree is not None else product // int(expansion)
    expansion = int(expansion) if expansion is not None else product // degree
    if degree < 1 or expansion < 1 or degree * expansion != product:
        raise CheckpointFormatError(
            f"{inf.model_path}: degree {degree} x expansion {expansion} ({where}) != {product}, "
            "the width of po_proj divided by d_model"
        )
    inf.origin["degree/expansion"] = where
    return degree, expansion


def _convert_tensors(state, fmt, path):
    """Renames the tensors to ``[CNN, MixerEncoder]`` names."""
    out, unknown = {}, []
    for key, value in state.items():
        if key.startswith("0."):
            out[key] = value
        elif key.startswith(_SRC + "custom_src_module.layers.0.w."):
            out["1.input_projection.0." + key.rsplit(".", 1)[1]] = value
        elif key.startswith(_SRC + "encoder."):
            new = "1.encoder." + key[len(_SRC + "encoder."):]
            if fmt == POM4SPEECH:
                for old, ours in _POM_RENAMES:
                    new = new.replace(old, ours)
            out[new] = value
        elif not key.startswith(_IGNORED):
            unknown.append(key)
    if unknown:
        shown = ", ".join(unknown[:3]) + (" ..." if len(unknown) > 3 else "")
        raise CheckpointFormatError(f"{path}: {len(unknown)} tensors this converter does not know ({shown})")
    return convert_speechbrain_conformer_state_dict(out)


def _check_against_model(state, config, path):
    """The converted tensors must be exactly those of our model (built on the meta device)."""
    with torch.device("meta"):
        model = build_pretrained_model(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    misshaped = [
        f"{k} {tuple(state[k].shape)} != {expected[k]}"
        for k in expected
        if k in state and tuple(state[k].shape) != expected[k]
    ]
    problems = [
        f"{what} {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
        for what, names in (("missing", missing), ("unexpected", extra), ("misshaped", misshaped))
        if names
    ]
    if problems:
        raise CheckpointFormatError(
            f"{path}: the converted tensors do not fit [CNN, MixerEncoder]: {'; '.join(problems)}"
        )


def convert_normalizer(stats, norm_type, n_mels, path):
    """The ``normalize.ckpt`` to write: SpeechBrain 1.1's ``InputNormalization``
    state ``{"count", "glob_mean", "glob_std"}`` (float32 ``[n_mels]``
    statistics for ``global``, empty ones otherwise).

    Example
    -------
    >>> stats = {"count": 3, "glob_mean": torch.zeros(2), "glob_std": torch.ones(2), "spk_dict_mean": {}}
    >>> sorted(convert_normalizer(stats, "global", 2, "normalize.ckpt"))
    ['count', 'glob_mean', 'glob_std']
    >>> convert_normalizer(None, "sentence", 80, "normalize.ckpt")["glob_mean"].numel()
    0
    """
    if norm_type != "global":
        return {"count": 0, "glob_mean": torch.empty(0), "glob_std": torch.empty(0)}
    if not isinstance(stats, dict) or not int(stats.get("count", 0) or 0):
        raise CheckpointFormatError(f"{path}: norm_type global but no statistics were accumulated (count 0)")
    mean, std = stats.get("glob_mean"), stats.get("glob_std")
    for name, value in (("glob_mean", mean), ("glob_std", std)):
        if not torch.is_tensor(value) or value.shape != (n_mels,) or not torch.isfinite(value).all():
            shape = tuple(value.shape) if torch.is_tensor(value) else type(value).__name__
            raise CheckpointFormatError(f"{path}: {name} is {shape}, expected {n_mels} finite values")
    if (std <= 0).any():
        raise CheckpointFormatError(f"{path}: glob_std has values <= 0")
    return {"count": int(stats["count"]), "glob_mean": mean.float().clone(), "glob_std": std.float().clone()}


def _normalisation(ckpt_dir, inf):
    """``(norm_type, normalize.ckpt state)`` of a foreign checkpoint."""
    path = os.path.join(ckpt_dir, NORMALIZE)
    stats = _load(path, "InputNormalization statistics") if os.path.isfile(path) else None
    if stats is not None and not isinstance(stats, dict):
        raise CheckpointFormatError(f"{path}: not InputNormalization statistics (found {type(stats).__name__})")
    has_stats = bool(stats) and int(stats.get("count", 0) or 0) > 0 and torch.is_tensor(stats.get("glob_mean")) \
        and stats["glob_mean"].numel() > 0
    norm_type = inf.hparams.get("norm_type")
    if norm_type is not None:
        inf.origin["norm_type"] = "hyperparams.yaml"
    elif stats is None:
        raise CheckpointFormatError(
            f"{ckpt_dir}: no {NORMALIZE} and no hyperparams.yaml: the feature normalisation cannot be told"
        )
    else:
        norm_type = "global" if has_stats else "sentence"
        inf.origin["norm_type"] = f"{NORMALIZE} (count {int(stats.get('count', 0) or 0)})"
    if norm_type not in ("global", "sentence", "batch"):
        raise CheckpointFormatError(f"{inf.hparams_path}: norm_type {norm_type!r} is not supported (global, sentence, batch)")
    inf.config["norm_type"] = norm_type
    return norm_type, convert_normalizer(stats, norm_type, inf.config["n_mels"], path)


def _fingerprint(ckpt_dir):
    files = {}
    for name in (MODEL, NORMALIZE):
        path = os.path.join(ckpt_dir, name)
        if os.path.isfile(path):
            st = os.stat(path)
            files[name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return {"source": os.path.abspath(ckpt_dir), "files": files}


def _passed(degree, expansion):
    return {k: v for k, v in (("degree", degree), ("expansion", expansion)) if v is not None}


def read_provenance(out_dir):
    """The ``converted_from.json`` of a converted folder, or None."""
    path = os.path.join(out_dir, PROVENANCE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def is_converted_from(out_dir, src, degree=None, expansion=None):
    """Whether ``out_dir`` is a complete conversion of the checkpoint ``src``
    designates (same folder, same file sizes and times, same options)."""
    record = read_provenance(out_dir)
    if record is None or not all(os.path.isfile(os.path.join(out_dir, n)) for n in (MODEL, NORMALIZE, CONFIG)):
        return False
    try:
        ckpt_dir = resolve_checkpoint_dir(src)
    except FileNotFoundError:
        return False
    mine = _fingerprint(ckpt_dir)
    return (record.get("source"), record.get("files"), record.get("options", {})) == (
        mine["source"], mine["files"], _passed(degree, expansion))


def convert_checkpoint(src, out_dir, degree=None, expansion=None, overwrite=False):
    """Writes the checkpoint that ``src`` designates into ``out_dir`` in our layout.

    Arguments
    ---------
    src : str
        A SpeechBrain or pom4speech BEST-RQ run (output folder, ``save/`` or
        one ``CKPT+*`` folder), or a folder in our layout.
    out_dir : str
        Folder to create (written under a temporary name, then renamed).
    degree, expansion : int, optional
        PoM degree ``k`` and expansion ``D`` of a pom4speech checkpoint, when
        its run folder has no ``hyperparams.yaml`` (one of them is enough).
    overwrite : bool
        Replace ``out_dir`` when it holds an earlier conversion of something
        else (a folder that is not a conversion is never replaced).

    Returns
    -------
    str
        ``out_dir`` (left as it is when it already holds this conversion), or
        the checkpoint folder itself when ``src`` is in our layout.

    Raises
    ------
    FileNotFoundError, CheckpointFormatError
        One line naming the file and what does not fit.
    """
    ckpt_dir = resolve_checkpoint_dir(src)
    model_path = os.path.join(ckpt_dir, MODEL)
    state = _load_state_dict(model_path)
    fmt = _format_of_keys(list(state))
    if fmt is None:
        raise CheckpointFormatError(_describe_keys(model_path, list(state)))
    if fmt == OURS:
        return ckpt_dir
    out_dir = os.path.abspath(os.path.expanduser(str(out_dir)))
    if os.path.exists(out_dir) and not (os.path.isdir(out_dir) and not os.listdir(out_dir)):  # an empty folder is fine
        if is_converted_from(out_dir, src, degree, expansion):
            logger.info(f"{out_dir} already holds the conversion of {ckpt_dir}")
            return out_dir
        if not overwrite or read_provenance(out_dir) is None:
            raise CheckpointFormatError(
                f"{out_dir} already exists and is not a conversion of {ckpt_dir}"
                + (" (pass overwrite=True / --overwrite to replace it)" if read_provenance(out_dir) is not None else "")
            )

    hparams_path = find_hyperparams(ckpt_dir)
    hparams = read_hyperparams(hparams_path) if hparams_path else {}
    inf = _Inference(model_path, hparams, hparams_path or "hyperparams.yaml")
    _infer_cnn(state, inf)
    _infer_encoder(state, fmt, inf, degree, expansion)
    for key in ("sample_rate", "n_fft", "hop_length"):
        inf.setting(key, default=DEFAULTS[key])
    norm_type, norm_state = _normalisation(ckpt_dir, inf)
    config = {key: inf.config[key] for key in (
        "causal", "mixer", "mixer_options", "positional_encoding", "d_model", "num_layers", "d_ffn", "kernel_size",
        "activation", "cnn_channels", "cnn_output_size", "n_mels", "sample_rate", "n_fft", "hop_length", "norm_type")}
    converted = _convert_tensors(state, fmt, model_path)
    _check_against_model(converted, config, model_path)

    record = dict(_fingerprint(ckpt_dir))
    record.update({
        "format": fmt,
        "hyperparams": hparams_path,
        "options": _passed(degree, expansion),
        "origin": dict(sorted(inf.origin.items())),
        "converter": "pom.convert",
    })
    record["notes"] = []
    if hparams.get("streaming"):
        record["notes"].append("pre-trained with dynamic chunk training (streaming: True)")
    if fmt == POM4SPEECH:
        record["notes"].append(
            "the authors' PoM averages padded (zeroed) frames too; ours averages valid frames only: "
            "the same outputs on unpadded input"
        )

    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(out_dir)}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    try:
        torch.save({k: v.detach().clone().contiguous() for k, v in converted.items()}, os.path.join(tmp, MODEL))
        torch.save(norm_state, os.path.join(tmp, NORMALIZE))
        EncoderConfig(**config).save(os.path.join(tmp, CONFIG))
        with open(os.path.join(tmp, PROVENANCE), "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2, sort_keys=True)
            f.write("\n")
        _publish(tmp, out_dir, src, degree, expansion)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info(f"Converted the {FORMAT_NAMES[fmt]} {ckpt_dir} into {out_dir} (norm_type {norm_type})")
    return out_dir


def _publish(tmp, out_dir, src, degree, expansion):
    """Renames the finished ``tmp`` folder to ``out_dir``, replacing an earlier
    conversion; if another process published the same conversion first, keeps theirs."""
    old = None
    if os.path.exists(out_dir):
        old = f"{tmp}.old"
        try:
            os.rename(out_dir, old)
        except FileNotFoundError:  # another process moved it first
            old = None
    try:
        os.rename(tmp, out_dir)
    except OSError:
        if not is_converted_from(out_dir, src, degree, expansion):
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------- command line
def describe(out_dir):
    """Lines saying what a converted folder holds."""
    config = EncoderConfig.read(os.path.join(out_dir, CONFIG))
    record = read_provenance(out_dir) or {}
    stats = torch.load(os.path.join(out_dir, NORMALIZE), map_location="cpu", weights_only=True)
    options = ", ".join(f"{k} {v}" for k, v in sorted(config["mixer_options"].items()))
    lines = [
        f"{FORMAT_NAMES.get(record.get('format'), 'checkpoint')} {record.get('source', '?')}",
        f"  -> {out_dir}",
        f"  {MODEL}: [CNN {tuple(config['cnn_channels'])}, MixerEncoder] mixer {config['mixer']} ({options}), "
        f"{config['num_layers']} layers, d_model {config['d_model']}, d_ffn {config['d_ffn']}, "
        f"kernel {config['kernel_size']}, positions {config['positional_encoding']}",
        f"  {NORMALIZE}: norm_type {config['norm_type']}"
        + (f" (count {stats['count']}, {stats['glob_mean'].numel()} mel bins)" if config["norm_type"] == "global" else ""),
        f"  {CONFIG}, {PROVENANCE}",
    ]
    lines.extend(f"  note: {note}" for note in record.get("notes", []))
    return lines


def main(argv=None):
    """``python -m pom.convert SRC OUT [--degree K] [--expansion D] [--overwrite]``."""
    parser = argparse.ArgumentParser(
        prog="python -m pom.convert",
        description="Convert a SpeechBrain or PoM-authors BEST-RQ checkpoint into pom-speech's pre-trained layout.",
    )
    parser.add_argument("src", help="run output folder, save/ folder or CKPT+* folder")
    parser.add_argument("out", help="folder to write (model.ckpt, normalize.ckpt, encoder_config.json, converted_from.json)")
    parser.add_argument("--degree", type=int, default=None, help="PoM degree k (authors' checkpoints without hyperparams.yaml)")
    parser.add_argument("--expansion", type=int, default=None, help="PoM expansion D (idem)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier conversion in OUT")
    args = parser.parse_args(argv)
    try:
        out = convert_checkpoint(
            args.src, args.out, degree=args.degree, expansion=args.expansion, overwrite=args.overwrite
        )
    except (FileNotFoundError, CheckpointFormatError) as err:
        sys.exit(f"Error: {err}")
    if out != os.path.abspath(os.path.expanduser(args.out)):
        print(f"{out} is already in pom-speech's layout: nothing converted, use it as it is")
    else:
        print("\n".join(describe(out)))
    return out


if __name__ == "__main__":
    main()
