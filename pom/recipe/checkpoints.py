"""What the recipes keep in their checkpoints, beyond SpeechBrain's own.

* :class:`KillSafeCheckpointer` -- SpeechBrain's ``Checkpointer`` that makes a
  checkpoint visible only once all its files are written, so that a run killed
  while saving resumes from the previous checkpoint.
* :class:`EncoderConfig` -- the architecture of the pre-trained encoder, saved
  as ``encoder_config.json`` (and inside each checkpoint); its
  :meth:`~EncoderConfig.differences` is the one comparison of two
  configurations (resuming, fine-tuning, importing).
* :func:`module_fingerprint`, :func:`statistics_fingerprint` -- hashes of
  weights and normalisation statistics, to check that DDP ranks agree.

Authors
 * pom-speech contributors 2025
"""

import hashlib
import json
import logging
import os
import pathlib
import shutil

import torch
from speechbrain.utils.checkpoints import (
    CKPT_PREFIX,
    METAFNAME,
    Checkpointer,
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)
from speechbrain.utils.distributed import if_main_process

from pom.recipe.files import write_json


def module_fingerprint(*modules):
    """SHA-256 (first 16 hex digits) of the parameters and buffers of
    ``modules``, in state-dict order: equal iff the tensors are bitwise equal
    (used to check that DDP ranks hold the same weights and codebook).

    Example
    -------
    >>> a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    >>> module_fingerprint(a) == module_fingerprint(a), module_fingerprint(a) == module_fingerprint(b)
    (True, False)
    """
    digest = hashlib.sha256()
    for module in modules:
        module = getattr(module, "module", module)  # DDP wrapper
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def statistics_fingerprint(normalize):
    """SHA-256 (first 16 hex digits) of the global statistics of a SpeechBrain
    ``InputNormalization`` (count, mean, std), which are not in its state dict.

    Example
    -------
    >>> from speechbrain.processing.features import InputNormalization
    >>> norm = InputNormalization(norm_type="global")
    >>> before = statistics_fingerprint(norm)
    >>> _ = norm(torch.randn(2, 5, 3), torch.ones(2))
    >>> statistics_fingerprint(norm) != before
    True
    """
    digest = hashlib.sha256(str(int(normalize.count)).encode())
    for tensor in (normalize.glob_mean, normalize.glob_std):
        digest.update(tensor.detach().cpu().float().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


class KillSafeCheckpointer(Checkpointer):
    """SpeechBrain's ``Checkpointer`` whose checkpoints appear atomically.

    SpeechBrain writes a checkpoint's ``CKPT.yaml`` first and its parameter
    files afterwards, so a process killed while saving leaves a checkpoint
    that looks complete and fails to load. Here ``CKPT.yaml`` is written under
    a temporary name and renamed once every file is written (a rename is
    atomic), so recovery only ever sees complete checkpoints; leftovers of an
    interrupted save are deleted at the next save. Same arguments and
    behaviour as ``Checkpointer`` otherwise.

    Example
    -------
    >>> import tempfile
    >>> layer = torch.nn.Linear(2, 2)
    >>> ckpt = KillSafeCheckpointer(tempfile.mkdtemp(), {"layer": layer})
    >>> saved = ckpt.save_checkpoint()
    >>> (saved.path / "CKPT.yaml").exists(), (saved.path / "layer.ckpt").exists()
    (True, True)
    >>> ckpt.find_checkpoint().path == saved.path
    True
    """

    PENDING_SUFFIX = ".pending"

    def _save_checkpoint_metafile(self, fpath, meta_to_include={}, end_of_epoch=True):
        fpath = pathlib.Path(fpath)
        self._pending_meta = fpath
        return super()._save_checkpoint_metafile(
            fpath.with_name(fpath.name + self.PENDING_SUFFIX), meta_to_include, end_of_epoch
        )

    def save_checkpoint(self, meta={}, end_of_epoch=True, name=None, verbosity=logging.INFO):
        """Saves a checkpoint (see ``Checkpointer.save_checkpoint``); it becomes
        visible to ``recover_if_possible`` only when complete."""
        self._pending_meta = None
        saved = super().save_checkpoint(meta=meta, end_of_epoch=end_of_epoch, name=name, verbosity=verbosity)
        if if_main_process() and self._pending_meta is not None:
            final = self._pending_meta
            os.replace(final.with_name(final.name + self.PENDING_SUFFIX), final)
            self._remove_incomplete(keep=final.parent)
        return saved

    def _remove_incomplete(self, keep):
        for path in self.checkpoints_dir.glob(f"{CKPT_PREFIX}+*"):
            if path != keep and path.is_dir() and not (path / METAFNAME).exists():
                shutil.rmtree(path, ignore_errors=True)


class EncoderConfigMismatch(ValueError):
    """A checkpoint's encoder configuration differs from the current one."""


@register_checkpoint_hooks
class EncoderConfig:
    """The architecture of the pre-trained encoder, for the fine-tuning recipe.

    Written as ``encoder_config.json`` beside the checkpoints and saved in
    every checkpoint (``encoder_config.ckpt``, the same JSON). Loading a
    checkpoint whose configuration differs from the current one raises
    :class:`EncoderConfigMismatch` (a ``ValueError``) naming the differing
    keys, rather than a shape mismatch.

    Arguments
    ---------
    **config
        JSON-serialisable values (mixer, mixer_options, d_model, ...).

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "encoder_config.json")
    >>> EncoderConfig(mixer="pom", d_model=488).save(path)
    >>> EncoderConfig.read(path)["d_model"]
    488
    >>> EncoderConfig(mixer="pom", d_model=512).check(EncoderConfig.read(path))
    Traceback (most recent call last):
    ...
    pom.recipe.checkpoints.EncoderConfigMismatch: The encoder ... d_model: 488 (saved) != 512 (here). Use ...
    """

    def __init__(self, **config):
        self.config = json.loads(json.dumps(config, default=_plain))  # plain types, as in the file

    @mark_as_saver
    def save(self, path):
        """Writes the configuration as JSON (atomically)."""
        write_json(path, self.config)

    @mark_as_loader
    def load(self, path, end_of_epoch=False):
        """Checks that a saved configuration matches this one."""
        del end_of_epoch
        self.check(self.read(path), source=str(path))

    @staticmethod
    def read(path):
        """Returns the configuration dict saved at ``path``."""
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    #: Mixer options that change training, not the weights (a fine-tuning may use another value).
    TRAINING_ONLY_OPTIONS = ("dropout",)

    @classmethod
    def differences(cls, saved, current, labels=("saved", "here")):
        """``"key: a (saved) != b (here)"`` for every architecture key that
        differs (mixer options such as ``dropout`` are not compared).

        Example
        -------
        >>> EncoderConfig.differences({"d_model": 8, "mixer_options": {"nhead": 2, "dropout": 0.1}},
        ...                           {"d_model": 8, "mixer_options": {"nhead": 2, "dropout": 0.0}})
        []
        """

        def architecture(config):
            config = dict(config)
            if isinstance(config.get("mixer_options"), dict):
                config["mixer_options"] = {
                    k: v for k, v in config["mixer_options"].items() if k not in cls.TRAINING_ONLY_OPTIONS
                }
            return config

        saved, current = architecture(saved), architecture(current)
        return [
            f"{k}: {saved.get(k)!r} ({labels[0]}) != {current.get(k)!r} ({labels[1]})"
            for k in sorted(set(saved) | set(current))
            if saved.get(k) != current.get(k)
        ]

    def check(self, saved, source="the checkpoint"):
        """Raises :class:`EncoderConfigMismatch` if the architecture in ``saved`` differs."""
        diffs = self.differences(saved, self.config)
        if diffs:
            raise EncoderConfigMismatch(
                f"The encoder in {source} does not match this configuration: "
                + "; ".join(diffs)
                + ". Use the same mixer and sizes, or another output_folder."
            )


def _plain(value):
    """JSON fallback: tuples are lists already; classes and functions by dotted name."""
    target = getattr(value, "func", value)  # functools.partial
    name = getattr(target, "__qualname__", None)
    if name is not None:
        return f"{getattr(target, '__module__', '')}.{name}"
    return str(value)
