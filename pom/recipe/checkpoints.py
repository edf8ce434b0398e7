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
* :func:`select_checkpoints`, :func:`save_averaged_checkpoint` -- checkpoint
  averaging (SpeechBrain's ``average_checkpoints``) of the fine-tuning recipe;
  :func:`final_checkpoint` -- the checkpoint a run tests with (averaged or best).

Authors
 * pom-speech contributors 2025
"""

import hashlib
import json
import logging
import os
import pathlib
import shutil
from functools import partial

import torch
from speechbrain.utils.checkpoints import (
    CKPT_PREFIX,
    METAFNAME,
    Checkpointer,
    average_checkpoints,
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

    #: Mixer options that change training or how the same function is computed, not the weights
    #: (a fine-tuning may use another value; a configuration saved without them still matches).
    TRAINING_ONLY_OPTIONS = ("dropout", "implementation", "chunk_size", "scan")

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


#: Sub-folder of a run's ``save/`` holding its averaged checkpoint (out of reach of
#: the checkpointer's recovery and clean-up, which see ``save/CKPT+*`` only).
AVERAGED_FOLDER = "averaged"
#: The values of ``avg_checkpoints_select``.
AVERAGE_SELECTIONS = ("best", "last")


def select_checkpoints(checkpointer, num, best_metric, select="best"):
    """The (at most) ``num`` validated checkpoints of ``checkpointer`` (those
    whose meta holds ``best_metric``): the lowest ``best_metric`` first
    (``select="best"``), or the most recent first (``"last"``).

    Example
    -------
    >>> import tempfile
    >>> ckpt = Checkpointer(tempfile.mkdtemp(), {"layer": torch.nn.Linear(1, 1)})
    >>> for wer in (30.0, 10.0, 20.0):
    ...     _ = ckpt.save_checkpoint(meta={"WER": wer})
    >>> [c.meta["WER"] for c in select_checkpoints(ckpt, 2, "WER")]
    [10.0, 20.0]
    >>> [c.meta["WER"] for c in select_checkpoints(ckpt, 2, "WER", select="last")]
    [20.0, 10.0]
    """
    if select not in AVERAGE_SELECTIONS:
        raise ValueError(f"select must be one of {AVERAGE_SELECTIONS}, got {select!r}")
    if select == "best":
        return checkpointer.find_checkpoints(min_key=best_metric, max_num_checkpoints=num)
    return checkpointer.find_checkpoints(ckpt_predicate=lambda c: best_metric in c.meta, max_num_checkpoints=num)


def save_averaged_checkpoint(checkpointer, checkpoints, average=("model", "pt_model"), meta=None):
    """Saves the average of ``checkpoints`` as the one checkpoint of
    ``<checkpoints_dir>/averaged/`` (replacing an earlier one) and returns it.

    Every recoverable of ``checkpointer`` is loaded from ``checkpoints[0]``,
    then the modules named in ``average`` get the mean of their parameters
    over ``checkpoints`` (SpeechBrain's ``average_checkpoints``), and all are
    saved, so the averaged checkpoint loads like any other. The live
    recoverables keep these values. Call it on the main process.

    Example
    -------
    >>> import tempfile
    >>> layer = torch.nn.Linear(1, 1, bias=False)
    >>> ckpt = Checkpointer(tempfile.mkdtemp(), {"model": layer})
    >>> for w in (1.0, 2.0, 6.0):
    ...     _ = torch.nn.init.constant_(layer.weight, w)
    ...     _ = ckpt.save_checkpoint(meta={"WER": w})
    >>> averaged = save_averaged_checkpoint(ckpt, ckpt.find_checkpoints(min_key="WER"), average=["model"])
    >>> float(layer.weight), final_checkpoint(ckpt.checkpoints_dir, "WER").path == averaged.path
    (3.0, True)
    """
    if not checkpoints:
        raise ValueError("no checkpoint to average")
    checkpointer.load_checkpoint(checkpoints[0])
    for name in average:
        state = average_checkpoints(checkpoints, name, parameter_loader=partial(torch.load, map_location="cpu"))
        module = checkpointer.recoverables[name]
        getattr(module, "module", module).load_state_dict(state)
    out = KillSafeCheckpointer(
        pathlib.Path(checkpointer.checkpoints_dir) / AVERAGED_FOLDER, recoverables=checkpointer.recoverables
    )
    saved = out.save_checkpoint(meta=dict(meta or {}), verbosity=logging.DEBUG)
    out.delete_checkpoints(num_to_keep=1, verbosity=logging.DEBUG)  # the earlier averaged one
    return saved


def remove_averaged_checkpoint(save_folder):
    """Deletes ``<save_folder>/averaged/`` (a run tested without averaging)."""
    shutil.rmtree(os.path.join(save_folder, AVERAGED_FOLDER), ignore_errors=True)


def final_checkpoint(save_folder, best_metric):
    """The SpeechBrain ``Checkpoint`` a fine-tuning run tests with: its
    averaged checkpoint (``save/averaged/``, written when the run averages
    checkpoints: ``avg_checkpoints`` > 1), else the checkpoint with the lowest
    ``best_metric`` in its meta (what ``Brain.evaluate(min_key=best_metric)``
    loads); ``None`` when there is none. Load it with a ``Checkpointer``
    holding the recoverables to read (``load_checkpoint``), or read its
    ``paramfiles`` (``model.ckpt``, ``pt_model.ckpt``, ``normalize.ckpt``, ...).

    Example
    -------
    >>> import tempfile
    >>> ckpt = Checkpointer(tempfile.mkdtemp(), {"layer": torch.nn.Linear(1, 1)})
    >>> for wer in (30.0, 10.0, 20.0):
    ...     _ = ckpt.save_checkpoint(meta={"WER": wer})
    >>> final_checkpoint(ckpt.checkpoints_dir, "WER").meta["WER"]
    10.0
    """
    averaged = os.path.join(save_folder, AVERAGED_FOLDER)
    if os.path.isdir(averaged):
        found = Checkpointer(averaged).find_checkpoint()
        if found is not None:
            return found
    if not os.path.isdir(save_folder):
        return None
    return Checkpointer(save_folder).find_checkpoint(min_key=best_metric)
