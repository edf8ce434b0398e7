"""Imports pre-trained BEST-RQ checkpoints made elsewhere, so that fine-tuning
here can start from them.

Our pre-trained layout (what :func:`pom.recipe.pretrained.find_pretrained` returns and
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
the run's ``hyperparams.yaml`` when there is one (resolved as hyperpyyaml
resolves it: references, copies, arithmetic; a setting it names but that
cannot be resolved is an error, never a default), else from the options, else
from the recipes' defaults (GELU, dropout 0.1, not causal, 16 kHz, 400-point
FFT, 10 ms hop). Every conversion is then checked against the source model,
built with SpeechBrain's own classes and the source tensors
(:mod:`~pom.convert.verify`): the same encoder output on a random batch within
1e-5, or nothing is written; the figure is recorded in ``converted_from.json``.
A folder already in our layout is returned unchanged.

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
>>> from pom.recipe.checkpoints import EncoderConfig
>>> config = EncoderConfig.read(os.path.join(out, "encoder_config.json"))
>>> config["mixer"], config["mixer_options"], config["d_model"], config["kernel_size"], config["norm_type"]
('relposmhaxl', {'dropout': 0.1, 'nhead': 2}, 16, 5, 'sentence')
>>> detect_format(out)
'pom'

Command line (:mod:`pom.convert.__main__`)::

    python -m pom.convert SRC OUT [--degree K] [--expansion D] [--overwrite]

The package: :mod:`~pom.convert.layout` (our layout: reading, building,
provenance, writing), :mod:`~pom.convert.speechbrain_conformer` (what both
foreign formats share), :mod:`~pom.convert.speechbrain_bestrq` and
:mod:`~pom.convert.pom4speech` (one module per source format),
:mod:`~pom.convert.speechbrain_yaml` (a run's ``hyperparams.yaml``),
:mod:`~pom.convert.verify` (the check against the source model).

Authors
 * pom-speech contributors 2025
"""

import os
import re

from speechbrain.utils.logger import get_logger

from pom.convert import pom4speech, speechbrain_bestrq, speechbrain_conformer
from pom.convert.layout import (
    MODEL,
    CheckpointFormatError,
    build_pretrained_model,
    check_against_model,
    import_dotted,
    is_converted_from,
    load_state_dict,
    passed_options,
    read_provenance,
    resolve_checkpoint_dir,
    source_fingerprint,
    write_converted,
)
from pom.convert.speechbrain_conformer import DEFAULTS, LAYER, Inference, convert_normalizer
from pom.convert.speechbrain_yaml import find_hyperparams, read_hyperparams, resolve_hyperparams
from pom.convert.verify import verify_conversion

__all__ = [
    "CheckpointFormatError",
    "FORMAT_NAMES",
    "OURS",
    "POM4SPEECH",
    "SPEECHBRAIN_BESTRQ",
    "build_pretrained_model",
    "convert_checkpoint",
    "convert_normalizer",
    "detect_format",
    "import_dotted",
    "read_provenance",
    "resolve_checkpoint_dir",
]

logger = get_logger(__name__)

#: Layout names returned by :func:`detect_format`.
OURS, SPEECHBRAIN_BESTRQ, POM4SPEECH = "pom", speechbrain_bestrq.NAME, pom4speech.NAME
#: The module that reads each foreign format.
FORMATS = {POM4SPEECH: pom4speech, SPEECHBRAIN_BESTRQ: speechbrain_bestrq}
FORMAT_NAMES = {OURS: "pom-speech checkpoint", **{name: module.DESCRIPTION for name, module in FORMATS.items()}}
#: The keys of ``encoder_config.json`` (those of ``encoder_config`` in hparams/pretrain/base.yaml).
CONFIG_KEYS = (
    "causal",
    "mixer",
    "mixer_options",
    "positional_encoding",
    "d_model",
    "num_layers",
    "d_ffn",
    "kernel_size",
    "activation",
    "cnn_channels",
    "cnn_output_size",
    "n_mels",
    "sample_rate",
    "n_fft",
    "hop_length",
    "norm_type",
)


def _format_of_keys(keys):
    """Layout of a ``model.ckpt`` from its keys, or None."""
    if any(k.startswith("1.input_projection.") for k in keys) and any(k.startswith("1.encoder.layers.") for k in keys):
        return OURS
    return next((name for name, module in FORMATS.items() if module.matches(keys)), None)


def _describe_keys(path, keys):
    """One line saying what a ``model.ckpt`` that fits no layout holds."""
    keys = list(keys)
    mixer_of = re.compile(r"\.layers\.\d+\.(mha_layer(?:\.[a-z_]+)?)\.")
    mixers = sorted({m.group(1) for m in map(mixer_of.search, keys) if m})
    if mixers and any(LAYER.match(k) for k in keys):
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
    keys = list(load_state_dict(path))
    fmt = _format_of_keys(keys)
    if fmt is None:
        raise CheckpointFormatError(_describe_keys(path, keys))
    return fmt


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
    state = load_state_dict(model_path)
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

    reader = FORMATS[fmt]
    hparams_path = find_hyperparams(ckpt_dir)
    hparams = read_hyperparams(hparams_path) if hparams_path else {}
    inf = Inference(model_path, hparams, hparams_path or "hyperparams.yaml")
    speechbrain_conformer.infer_cnn(state, inf)
    d_model = speechbrain_conformer.infer_conformer(state, inf, reader.ATTENTION_TYPE)
    reader.infer_mixer(state, inf, d_model, degree, expansion)
    for key in ("sample_rate", "n_fft", "hop_length"):
        inf.setting(key, default=DEFAULTS[key])
    norm_type, norm_state = speechbrain_conformer.read_normalisation(ckpt_dir, inf)
    config = {key: inf.config[key] for key in CONFIG_KEYS}
    converted = speechbrain_conformer.rename_tensors(state, reader.RENAMES, model_path)
    check_against_model(converted, config, model_path)
    tree = resolve_hyperparams(hparams_path) if hparams_path else None
    verification = verify_conversion(state, converted, config, reader, tree, model_path)

    record = dict(source_fingerprint(ckpt_dir))
    record.update(
        {
            "format": fmt,
            "hyperparams": hparams_path,
            "options": passed_options(degree, expansion),
            "origin": dict(sorted(inf.origin.items())),
            "converter": "pom.convert",
            "verification": verification,
            "notes": (["pre-trained with dynamic chunk training (streaming: True)"] if hparams.get("streaming") else [])
            + list(reader.NOTES),
        }
    )
    write_converted(out_dir, converted, norm_state, config, record, src, degree, expansion)
    logger.info(f"Converted the {FORMAT_NAMES[fmt]} {ckpt_dir} into {out_dir} (norm_type {norm_type})")
    return out_dir


def find_or_convert(path, import_dir=None, **convert_options):
    """:func:`pom.recipe.pretrained.find_pretrained`, a checkpoint of another code converted first.

    A SpeechBrain BEST-RQ or PoM authors' checkpoint (:func:`detect_format`) found at
    ``path`` is converted into ``import_dir`` once (a later call reuses the conversion
    while the source files are unchanged) and the converted folder is returned;
    ``convert_options`` (``degree=``, ``expansion=``) go to :func:`convert_checkpoint`.
    Ours, with or without its configuration, and a ``model.ckpt`` of no known layout
    are returned as found (loading then reports what does not fit).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist or holds no ``model.ckpt``.
    CheckpointFormatError
        A foreign checkpoint with ``import_dir=None``, or one that cannot be converted.
    """
    from pom.recipe.pretrained import find_pretrained

    found = find_pretrained(path)
    if found is None or found["config"] is not None:
        return found
    try:
        fmt = detect_format(found["dir"])
    except CheckpointFormatError:
        return found  # no known layout: loading reports the mismatch, as for ours without a configuration
    if fmt == OURS:
        return found
    if import_dir is None:
        raise CheckpointFormatError(
            f"pretrained_path {found['dir']} is a {FORMAT_NAMES[fmt]}: give an import folder to convert it into "
            "(find_or_convert(..., import_dir=...)), or convert it first with python -m pom.convert"
        )
    return find_pretrained(convert_checkpoint(found["dir"], import_dir, overwrite=True, **convert_options))
