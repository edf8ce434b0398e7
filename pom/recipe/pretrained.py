"""The pre-trained encoder a fine-tuning starts from: find it, check it, load it.

* :func:`find_pretrained` -- turns ``--pretrained_path`` (a pre-training output
  folder, its ``save/`` folder, one ``CKPT+*`` folder, the exported
  ``pretrained/`` folder, or ``none``; a foreign checkpoint is converted by the caller) into the
  files to load.
* :func:`check_pretrained_config` -- compares the saved encoder configuration
  with the fine-tuning YAML's (:meth:`EncoderConfig.differences`).
* :func:`load_pretrained` -- checks, then loads ``[CNN, encoder]`` and the
  normaliser with SpeechBrain's ``Pretrainer`` (strict: a missing or misshaped
  tensor is an error, not a warning).

Example
-------
>>> find_pretrained("none") is None
True

Authors
 * pom-speech contributors 2025
"""

import glob
import os

from speechbrain.utils.checkpoints import Checkpointer, torch_recovery
from speechbrain.utils.logger import get_logger
from speechbrain.utils.parameter_transfer import Pretrainer

from pom.recipe.checkpoints import EncoderConfig

logger = get_logger(__name__)

#: Values of ``pretrained_path`` that mean "no pre-training" (a random encoder).
NO_PRETRAINING = ("", "none", "null", "random")


class PretrainedMismatchError(ValueError):
    """The pre-trained encoder cannot be loaded into the fine-tuning model."""


def _is_checkpoint_dir(path):
    return os.path.isfile(os.path.join(path, "model.ckpt"))


def find_pretrained(path):
    """Resolves ``--pretrained_path``.

    Returns ``None`` for no pre-training (``none``, ``null``, empty), else a
    dict with ``dir`` (the folder loaded from), ``model`` (``model.ckpt``:
    ``[CNN, encoder]``), ``normalize`` (or None) and ``config`` (the encoder
    configuration file, or None). Accepted: a folder holding ``model.ckpt``
    (one ``CKPT+*`` checkpoint or the exported ``pretrained/`` folder), a
    ``save/`` folder of checkpoints (the latest complete one is used), or a
    pre-training output folder (its latest checkpoint in ``save/``, else its
    ``pretrained/`` export).

    A checkpoint of another code (SpeechBrain's BEST-RQ recipe, the PoM
    authors') has no configuration here: its caller converts it first
    (:func:`pom.convert.find_or_convert`, which calls this function).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist or holds no ``model.ckpt``.
    """
    if path is None or str(path).strip().lower() in NO_PRETRAINING:
        return None
    path = os.path.abspath(os.path.expanduser(str(path)))
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"pretrained_path {path} does not exist (give a pre-training output folder, a CKPT+* folder, or none)"
        )
    chosen = None
    if _is_checkpoint_dir(path):
        chosen = path
    else:
        for save in (path, os.path.join(path, "save")):
            if glob.glob(os.path.join(save, "CKPT+*")):
                ckpt = Checkpointer(save).find_checkpoint()  # the latest complete checkpoint
                if ckpt is not None:
                    chosen = str(ckpt.path)
                    break
        if chosen is None and _is_checkpoint_dir(os.path.join(path, "pretrained")):
            chosen = os.path.join(path, "pretrained")
    if chosen is None or not _is_checkpoint_dir(chosen):
        raise FileNotFoundError(
            f"pretrained_path {path} holds no pre-trained encoder (expected model.ckpt, save/CKPT+*/model.ckpt "
            "or pretrained/model.ckpt)"
        )

    def optional(*names):
        for name in names:
            candidate = os.path.join(chosen, name)
            if os.path.isfile(candidate):
                return candidate
        return None

    config = optional("encoder_config.json", "encoder_config.ckpt")
    if config is None:  # a CKPT+* folder: the JSON sits in save/ and in the output folder
        config = next(
            (p for p in (os.path.join(os.path.dirname(chosen), "encoder_config.json"),) if os.path.isfile(p)), None
        )
    return {
        "dir": chosen,
        "model": os.path.join(chosen, "model.ckpt"),
        "normalize": optional("normalize.ckpt"),
        "config": config,
    }


def _strict_transfer(obj, path):
    """Parameter transfer that refuses missing, unexpected or misshaped tensors."""
    try:
        torch_recovery(obj, path, end_of_epoch=False)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        details = "; ".join(lines[1:4]) if len(lines) > 1 else lines[0]
        raise PretrainedMismatchError(
            f"the pre-trained weights in {path} do not fit this model ({details}{' ...' if len(lines) > 4 else ''})"
        ) from None


def check_pretrained_config(found, encoder_config, hparams_name="the fine-tuning YAML"):
    """Raises :class:`PretrainedMismatchError` when the checkpoint's encoder
    configuration (mixer, options, sizes, features) differs from the YAML's
    ``encoder_config``; returns the number of keys compared (0: no file)."""
    if found["config"] is None:
        logger.warning(f"No encoder_config.json for {found['dir']}: only tensor shapes are checked")
        return 0
    saved = EncoderConfig.read(found["config"])
    diffs = EncoderConfig.differences(saved, encoder_config.config, ("checkpoint", hparams_name))
    if diffs:
        raise PretrainedMismatchError(
            f"the pre-trained encoder in {found['dir']} does not match {hparams_name}: " + "; ".join(diffs)
        )
    return len(set(saved) | set(encoder_config.config))


def load_pretrained(found, pt_model, normalize, encoder_config, collect_in, hparams_name="the fine-tuning YAML"):
    """Checks and loads a pre-trained ``[CNN, encoder]`` (and normaliser).

    Arguments
    ---------
    found : dict
        From :func:`find_pretrained`.
    pt_model : torch.nn.ModuleList
        ``[CNN, encoder]`` of the fine-tuning model.
    normalize : torch.nn.Module
        The feature normaliser.
    encoder_config : pom.recipe.checkpoints.EncoderConfig
        The fine-tuning YAML's encoder configuration.
    collect_in : str
        Where SpeechBrain's ``Pretrainer`` links the files.
    hparams_name : str
        Named in error messages.

    Raises
    ------
    PretrainedMismatchError
        When the saved configuration (mixer, sizes, features) differs from
        the YAML, or a tensor is missing or has another shape.
    """
    check_pretrained_config(found, encoder_config, hparams_name)
    loadables = {"model": pt_model}
    paths = {"model": found["model"]}
    if found["normalize"] is not None:
        loadables["normalize"] = normalize
        paths["normalize"] = found["normalize"]
    pretrainer = Pretrainer(
        collect_in=collect_in,
        loadables=loadables,
        paths=paths,
        custom_hooks={"model": _strict_transfer},
    )
    pretrainer.collect_files()
    pretrainer.load_collected()
    logger.info(f"Loaded the pre-trained CNN + encoder from {found['dir']}")
