"""What the two foreign formats share: SpeechBrain's BEST-RQ model.

SpeechBrain's BEST-RQ recipe and the PoM authors' code (SpeechBrain 1.0.3 with
``attention_type: PoM``) both save ``model.ckpt`` as ``[CNN,
EncoderWrapper(TransformerASR)]``: the same CNN front end, input projection,
Conformer layers and ``normalize.ckpt``; only the token mixer differs
(:mod:`pom.convert.speechbrain_bestrq`, :mod:`pom.convert.pom4speech`). This
module reads the shared part: sizes from the tensor shapes (checked against
the run's ``hyperparams.yaml``), the normalisation, and the renaming of the
tensors to ``[CNN, MixerEncoder]``
(:func:`pom.encoder.convert_speechbrain_conformer_state_dict`).

Normalisation: SpeechBrain's ``InputNormalization`` saves
``{"count", "glob_mean", "glob_std"}`` (1.0.x adds empty per-speaker
dictionaries); ``glob_std`` is a standard deviation, not a variance. Statistics
(``count > 0``) mean ``norm_type: global`` (the PoM authors' setting);
none mean per-utterance normalisation (``sentence``, SpeechBrain 1.1's
BEST-RQ recipe), unless ``hyperparams.yaml`` names the type.

Authors
 * pom-speech contributors 2025
"""

import os
import re

import torch

from pom.convert.layout import CNN_BLOCKS, CNN_KERNEL, CNN_STRIDE, NORMALIZE, CheckpointFormatError, load_file
from pom.encoder import convert_speechbrain_conformer_state_dict

#: What the recipes use where a checkpoint cannot tell (SpeechBrain's BEST-RQ recipe, the PoM authors').
DEFAULTS = {
    "activation": "torch.nn.modules.activation.GELU",
    "dropout": 0.1,
    "causal": False,
    "sample_rate": 16000,
    "n_fft": 400,
    "hop_length": 10,
}
#: Prefix of the TransformerASR tensors in ``model.ckpt``, and of its encoder layers.
SRC = "1.transformer."
LAYER = re.compile(r"^1\.transformer\.encoder\.layers\.(\d+)\.")
FIRST_LAYER = SRC + "encoder.layers.0."
IGNORED = (  # constant tables: our encoder computes them for any length
    "1.transformer.positional_encoding.",
    "1.transformer.positional_encoding_decoder.",
)


class Inference:
    """Collects the configuration of a conversion and where each value came
    from (tensor shapes, ``hyperparams.yaml``, options or defaults)."""

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


def infer_cnn(state, inf):
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
            f"{path}: the CNN front end has {len(channels)} blocks, "
            f"pom-speech's (SpeechBrain's BEST-RQ) has {CNN_BLOCKS}"
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
                f"{inf.hparams_path}: CNN {name[4:]} {said!r}, "
                f"pom-speech's front end (SpeechBrain's BEST-RQ) has {expected!r}"
            )
    inf.shape("cnn_channels", channels)
    inf.shape("n_mels", inf.hparams.get("n_mels") or CNN_STRIDE * freqs[0])
    inf.origin["n_mels"] = "hyperparams.yaml" if inf.hparams.get("n_mels") else "CNN LayerNorm shape"
    inf.shape("cnn_output_size", freqs[-1] * channels[-1])


def infer_conformer(state, inf, attention_type):
    """The sizes of the Conformer (``d_model``, layers, ``d_ffn``, kernel) from the
    tensors, its activation and causality; ``attention_type``: the mixer the
    tensors hold, which ``hyperparams.yaml`` must name if it names one."""
    path = inf.model_path
    proj = state.get(SRC + "custom_src_module.layers.0.w.weight")
    if proj is None:
        raise CheckpointFormatError(f"{path}: no input projection ({SRC}custom_src_module.layers.0.w.weight)")
    d_model = int(proj.shape[0])
    if int(proj.shape[1]) != inf.config["cnn_output_size"]:
        raise CheckpointFormatError(
            f"{path}: the input projection takes {int(proj.shape[1])} features "
            f"but the CNN gives {inf.config['cnn_output_size']}"
        )
    inf.shape("d_model", d_model)
    layers = sorted({int(m.group(1)) for k in state for m in [LAYER.match(k)] if m})
    if layers != list(range(len(layers))):
        raise CheckpointFormatError(f"{path}: encoder layers {layers} are not numbered 0..N-1")
    inf.shape("num_layers", len(layers))
    inf.shape("d_ffn", int(state[FIRST_LAYER + "ffn_module1.1.ffn.0.weight"].shape[0]))
    inf.shape("kernel_size", int(state[FIRST_LAYER + "convolution_module.conv.weight"].shape[2]))
    inf.setting("activation", default=DEFAULTS["activation"])
    inf.setting("causal", default=DEFAULTS["causal"])
    attention = inf.hparams.get("attention_type")
    if attention is not None and attention != attention_type:
        raise CheckpointFormatError(
            f"{inf.hparams_path}: attention_type {attention!r}, but the tensors of {path} are {attention_type}'s"
        )
    return d_model


def rename_tensors(state, mixer_renames, path):
    """The tensors under ``[CNN, MixerEncoder]`` names; ``mixer_renames``:
    ``(theirs, ours)`` substrings of the mixer's tensor names."""
    out, unknown = {}, []
    for key, value in state.items():
        if key.startswith("0."):
            out[key] = value
        elif key.startswith(SRC + "custom_src_module.layers.0.w."):
            out["1.input_projection.0." + key.rsplit(".", 1)[1]] = value
        elif key.startswith(SRC + "encoder."):
            new = "1.encoder." + key[len(SRC + "encoder.") :]
            for old, ours in mixer_renames:
                new = new.replace(old, ours)
            out[new] = value
        elif not key.startswith(IGNORED):
            unknown.append(key)
    if unknown:
        shown = ", ".join(unknown[:3]) + (" ..." if len(unknown) > 3 else "")
        raise CheckpointFormatError(f"{path}: {len(unknown)} tensors this converter does not know ({shown})")
    return convert_speechbrain_conformer_state_dict(out)


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


def read_normalisation(ckpt_dir, inf):
    """``(norm_type, normalize.ckpt state)`` of a foreign checkpoint."""
    path = os.path.join(ckpt_dir, NORMALIZE)
    stats = load_file(path, "InputNormalization statistics") if os.path.isfile(path) else None
    if stats is not None and not isinstance(stats, dict):
        raise CheckpointFormatError(f"{path}: not InputNormalization statistics (found {type(stats).__name__})")
    has_stats = (
        bool(stats)
        and int(stats.get("count", 0) or 0) > 0
        and torch.is_tensor(stats.get("glob_mean"))
        and stats["glob_mean"].numel() > 0
    )
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
        raise CheckpointFormatError(
            f"{inf.hparams_path}: norm_type {norm_type!r} is not supported (global, sentence, batch)"
        )
    inf.config["norm_type"] = norm_type
    return norm_type, convert_normalizer(stats, norm_type, inf.config["n_mels"], path)
