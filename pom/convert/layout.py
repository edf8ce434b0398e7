"""pom-speech's pre-trained layout, which every conversion writes.

One folder with

* ``model.ckpt``: the state dict of ``torch.nn.ModuleList([CNN, encoder])``,
  SpeechBrain's ``ConvolutionFrontEnd`` and :class:`pom.encoder.MixerEncoder`
  (:func:`build_pretrained_model` builds it from the configuration);
* ``normalize.ckpt``: the state of SpeechBrain's ``InputNormalization``
  (``{"count", "glob_mean", "glob_std"}``, empty statistics for per-utterance
  normalisation);
* ``encoder_config.json``: the architecture, the keys of ``encoder_config`` in
  ``hparams/pretrain/base.yaml``;
* ``converted_from.json``: the provenance of a conversion (source folder, file
  sizes and times, options), so that a conversion is made once
  (:func:`is_converted_from`).

:func:`write_converted` writes such a folder under a temporary name and renames
it (a reader sees a complete folder or none). Also here: finding the checkpoint
folder a path designates and reading its files, with one-line errors.

Authors
 * pom-speech contributors 2025
"""

import glob
import importlib
import json
import os
import shutil
import uuid

import torch
from speechbrain.utils.checkpoints import Checkpointer

from pom.encoder import MixerEncoder
from pom.recipe.checkpoints import EncoderConfig
from pom.recipe.files import write_json

MODEL, NORMALIZE, CONFIG = "model.ckpt", "normalize.ckpt", "encoder_config.json"
PROVENANCE = "converted_from.json"
#: The CNN front end of SpeechBrain's BEST-RQ recipe and of ours (hparams/pretrain/base.yaml); only the channels vary.
CNN_BLOCKS, CNN_KERNEL, CNN_STRIDE = 2, 3, 2


class CheckpointFormatError(ValueError):
    """A checkpoint that cannot be imported; the message is one line naming the file."""


# ---------------------------------------------------------------------- reading
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
        raise FileNotFoundError(
            f"{path} does not exist (give a run's output folder, its save/ folder or a CKPT+* folder)"
        )
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


def load_file(path, what):
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


def load_state_dict(path):
    """The tensors of ``path``, a state dict (one-line error otherwise)."""
    state = load_file(path, "a PyTorch state dict")
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointFormatError(f"{path}: not a state dict of tensors (found {type(state).__name__})")
    return state


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


# ---------------------------------------------------------------------- our model
def cnn_front_end(config):
    """SpeechBrain's ``ConvolutionFrontEnd`` of the recipes (CNN_BLOCKS blocks of one
    kernel-CNN_KERNEL, stride-CNN_STRIDE convolution) for an encoder configuration's
    ``n_mels`` and ``cnn_channels``: ``[B, T, n_mels] -> [B, T / 4, n_mels / 4, channels]``.

    Example
    -------
    >>> cnn_front_end({"n_mels": 80, "cnn_channels": [4, 2]})(torch.randn(1, 16, 80)).shape
    torch.Size([1, 4, 20, 2])
    """
    from speechbrain.lobes.models.convolution import ConvolutionFrontEnd

    return ConvolutionFrontEnd(
        input_shape=[8, 10, config["n_mels"]],
        num_blocks=CNN_BLOCKS,
        num_layers_per_block=1,
        out_channels=tuple(config["cnn_channels"]),
        kernel_sizes=(CNN_KERNEL,) * CNN_BLOCKS,
        strides=(CNN_STRIDE,) * CNN_BLOCKS,
        residuals=(False,) * CNN_BLOCKS,
    )


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
    cnn = cnn_front_end(config)
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


def check_against_model(state, config, path):
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


# ---------------------------------------------------------------------- provenance
def source_fingerprint(ckpt_dir):
    """The source folder and the sizes and times of its files (a newer checkpoint differs)."""
    files = {}
    for name in (MODEL, NORMALIZE):
        path = os.path.join(ckpt_dir, name)
        if os.path.isfile(path):
            st = os.stat(path)
            files[name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return {"source": os.path.abspath(ckpt_dir), "files": files}


def passed_options(degree, expansion):
    """The conversion options given (recorded: another option means another conversion)."""
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
    mine = source_fingerprint(ckpt_dir)
    return (record.get("source"), record.get("files"), record.get("options", {})) == (
        mine["source"],
        mine["files"],
        passed_options(degree, expansion),
    )


# ---------------------------------------------------------------------- writing
def write_converted(out_dir, model_state, norm_state, config, record, src, degree=None, expansion=None):
    """Writes our layout into ``out_dir``: the files go into a temporary folder
    beside it, which is then renamed to ``out_dir`` (replacing an earlier
    conversion there)."""
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(out_dir)}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    try:
        torch.save({k: v.detach().clone().contiguous() for k, v in model_state.items()}, os.path.join(tmp, MODEL))
        torch.save(norm_state, os.path.join(tmp, NORMALIZE))
        EncoderConfig(**config).save(os.path.join(tmp, CONFIG))
        write_json(os.path.join(tmp, PROVENANCE), record)
        _publish(tmp, out_dir, src, degree, expansion)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


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
