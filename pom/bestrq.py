"""BEST-RQ pieces used by ``recipes/LibriSpeech/pretrain/train.py``.

SpeechBrain provides most of BEST-RQ (``brq_mask_collate_fn``, ``Fbank``,
``InputNormalization``, ``ConvolutionFrontEnd``, ``NoamScheduler``); this module
holds the few pieces we replace or add:

* :class:`RandomProjectionQuantizer` -- the frozen target quantizer, seeded on
  its own (identical on every DDP rank whatever was built before it) and light
  on memory (a matrix product instead of SpeechBrain 1.1's ``[B, V, T, d]``
  distance tensor), always computed in float32.
* :func:`pad_to_multiple`, :func:`masked_stacked_indices` -- frame stacking and
  the mapping from masked fbank frames to encoder frames.
* :class:`KillSafeCheckpointer` -- SpeechBrain's ``Checkpointer`` that makes a
  checkpoint visible only once all its files are written, so that a run killed
  while saving resumes from the previous checkpoint.
* :class:`EncoderConfig` -- the architecture of the pre-trained encoder, saved
  as ``encoder_config.json`` (and inside each checkpoint), for fine-tuning.
* :func:`load_hparams` -- hyperpyyaml loading with a ``base:`` file: the
  per-mixer YAML is merged over a shared base, then the command line on top.

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
import torch.nn.functional as F
from hyperpyyaml import load_hyperpyyaml
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from speechbrain.utils.checkpoints import (
    CKPT_PREFIX,
    METAFNAME,
    Checkpointer,
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)
from speechbrain.utils.distributed import if_main_process
from speechbrain.utils.logger import get_logger

logger = get_logger(__name__)


class RandomProjectionQuantizer(torch.nn.Module):
    r"""BEST-RQ's frozen random-projection quantizer.

    For a stacked feature vector :math:`x \in \mathbb{R}^{d_{in}}`, a frozen
    projection :math:`P \in \mathbb{R}^{d_{in} \times d}` (Xavier-uniform) and a
    frozen codebook :math:`C \in \mathbb{R}^{V \times d}` of unit rows:

    .. math::

        y = \frac{x P}{\lVert x P \rVert_2}, \qquad
        \mathrm{code}(x) = \arg\min_v \lVert C_v - y \rVert_2
                         = \arg\max_v \; C_v \cdot y

    The two forms agree because :math:`\lVert C_v - y\rVert^2 = 2 - 2\, C_v
    \cdot y` for unit vectors, so the code is found with one ``[N, d] x [d, V]``
    product instead of a ``[B, V, T, d]`` difference tensor (SpeechBrain 1.1's
    ``RandomProjectionQuantizer``: about 4 GB for a 6 x 60 s batch).
    The normalisation is over the feature axis (an older SpeechBrain version
    normalised over time). ``P`` and ``C`` are buffers (saved in checkpoints,
    never trained) with SpeechBrain's names, drawn from a generator seeded with
    ``seed``, so every DDP rank builds the same quantizer. The quantizer always
    runs in float32, also under bf16/fp16 autocast.

    Arguments
    ---------
    input_dim : int
        Size of the stacked input (4 frames x 80 mels = 320).
    cb_dim : int
        Size of the projected vectors and codes (16).
    cb_vocab : int
        Number of codes (8192).
    seed : int
        Seed of the projection and the codebook.

    Example
    -------
    >>> q = RandomProjectionQuantizer(input_dim=12, cb_dim=4, cb_vocab=32, seed=3)
    >>> x = torch.randn(2, 5, 12)
    >>> codes = q(x)
    >>> codes.shape, codes.dtype
    (torch.Size([2, 5]), torch.int64)
    >>> y = F.normalize(x @ q.P, dim=-1)     # nearest code by distance
    >>> dist = (y.unsqueeze(-2) - q.CB).norm(dim=-1)
    >>> torch.equal(dist.argmin(-1), codes)
    True
    >>> torch.equal(RandomProjectionQuantizer(12, 4, 32, seed=3).CB, q.CB)
    True
    """

    def __init__(self, input_dim, cb_dim, cb_vocab, seed=0):
        super().__init__()
        self.input_dim, self.cb_dim, self.cb_vocab = input_dim, cb_dim, cb_vocab
        generator = torch.Generator().manual_seed(int(seed))
        projection = torch.empty(input_dim, cb_dim)
        torch.nn.init.xavier_uniform_(projection, generator=generator)
        codebook = F.normalize(torch.randn(cb_vocab, cb_dim, generator=generator), dim=-1)
        self.register_buffer("P", projection)
        self.register_buffer("CB", codebook)

    @torch.no_grad()
    def forward(self, x):
        """``x`` ``[..., input_dim]`` -> code indices ``[...]`` (int64)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            y = F.normalize(x.float() @ self.P.float(), dim=-1)
            return (y @ self.CB.float().t()).argmax(dim=-1)


def pad_to_multiple(feats, multiple):
    """Right-pads the time axis (dim 1) of ``[B, T, C]`` features with zeros
    to a multiple of ``multiple`` (BEST-RQ stacks ``multiple`` frames per
    target and the CNN front end reduces time by the same factor).

    Example
    -------
    >>> pad_to_multiple(torch.ones(2, 9, 3), 4).shape
    torch.Size([2, 12, 3])
    >>> pad_to_multiple(torch.ones(2, 8, 3), 4).shape
    torch.Size([2, 8, 3])
    """
    missing = (-feats.shape[1]) % multiple
    if missing == 0:
        return feats
    return F.pad(feats, (0, 0, 0, missing))


def masked_stacked_indices(mask, stack):
    """Maps the masked fbank frame indices of ``compute_mask`` (spans whose
    starts and lengths are multiples of ``stack``) to the indices of the
    stacked frames, i.e. of the encoder frames after the ``stack``-fold CNN
    reduction, in increasing order.

    Example
    -------
    >>> masked_stacked_indices(torch.tensor([0, 1, 2, 3, 12, 13, 14, 15]), 4)
    tensor([0, 3])
    """
    return torch.unique(torch.div(mask, stack, rounding_mode="floor"))


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
    pom.bestrq.EncoderConfigMismatch: The encoder ... d_model: 488 (saved) != 512 (here). Use ...
    """

    def __init__(self, **config):
        self.config = json.loads(json.dumps(config, default=_plain))  # plain types, as in the file

    @mark_as_saver
    def save(self, path):
        """Writes the configuration as JSON."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.config, f, indent=2, sort_keys=True)
            f.write("\n")

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
                config["mixer_options"] = {k: v for k, v in config["mixer_options"].items()
                                           if k not in cls.TRAINING_ONLY_OPTIONS}
            return config

        saved, current = architecture(saved), architecture(current)
        return [f"{k}: {saved.get(k)!r} ({labels[0]}) != {current.get(k)!r} ({labels[1]})"
                for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]

    def check(self, saved, source="the checkpoint"):
        """Raises :class:`EncoderConfigMismatch` if the architecture in ``saved`` differs."""
        diffs = self.differences(saved, self.config)
        if diffs:
            raise EncoderConfigMismatch(
                f"The encoder in {source} does not match this configuration: " + "; ".join(diffs)
                + ". Use the same mixer and sizes, or another output_folder."
            )


def _plain(value):
    """JSON fallback: tuples are lists already; classes and functions by dotted name."""
    target = getattr(value, "func", value)  # functools.partial
    name = getattr(target, "__qualname__", None)
    if name is not None:
        return f"{getattr(target, '__module__', '')}.{name}"
    return str(value)


def _merge(into, update):
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
    return into


def resolve_hparams_file(hparams_file, overrides=""):
    """Merges a per-run YAML over its ``base:`` file(s).

    A YAML file whose top level has ``base: <path>`` or ``base: [<path>, ...]``
    (relative to the file) is an *overlay*. The first path is the full
    hyperpyyaml file; the next ones (e.g. ``../encoders/pom.yaml``, the one
    description of an encoder that both stages read) are plain key: value
    overlays merged over it in order; the file's other keys come next, and the
    command-line ``overrides`` last. If the base file has an ``experiment_name``
    key, it defaults to the overlay's file name (``pom_large.yaml`` ->
    ``pom_large``), so that every experiment file has its own output folder. Nested mappings such as ``mixer_options``
    are merged key by key. Overrides must name keys of the base file.

    Returns ``(yaml_path, overrides)`` to pass to ``load_hyperpyyaml``: the
    base file and the merged overrides (a dict, tags such as ``!ref`` kept).
    A file without ``base:`` is returned unchanged.

    Example
    -------
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> _ = open(os.path.join(d, "base.yaml"), "w").write(
    ...     "d_model: 8\\nlr: 0.1\\nmixer_options: {}\\nd_ffn: !ref <d_model> * 2\\n")
    >>> _ = open(os.path.join(d, "enc.yaml"), "w").write("d_model: 4\\nmixer_options: {degree: 2}\\n")
    >>> _ = open(os.path.join(d, "pom.yaml"), "w").write(
    ...     "base: [base.yaml, enc.yaml]\\nmixer_options: {expansion: 2}\\n")
    >>> path, merged = resolve_hparams_file(os.path.join(d, "pom.yaml"), "mixer_options: {degree: 3}")
    >>> os.path.basename(path), dict(merged["mixer_options"])
    ('base.yaml', {'degree': 3, 'expansion': 2})
    >>> h = load_hparams(os.path.join(d, "pom.yaml"), "lr: 0.5")
    >>> h["d_model"], h["d_ffn"], h["lr"]
    (4, 8, 0.5)
    """
    overlay = _read_yaml(hparams_file)
    try:
        cli = YAML().load(overrides) if isinstance(overrides, str) and overrides.strip() else (overrides or {})
    except YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ValueError(f"command-line overrides: {problem} (give each --option once, as --key=value)") from None
    if not isinstance(overlay, dict) or "base" not in overlay:
        return hparams_file, cli
    bases = overlay.pop("base")
    bases = [bases] if isinstance(bases, str) else list(bases)
    folder = os.path.dirname(os.path.abspath(hparams_file))
    paths = [os.path.normpath(os.path.join(folder, str(b))) for b in bases]
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{hparams_file}: its base file {path} does not exist")
    merged = {}
    if "experiment_name" in _read_yaml(paths[0]):  # named after the file unless set
        merged["experiment_name"] = os.path.splitext(os.path.basename(hparams_file))[0]
    for path in paths[1:]:
        layer = _read_yaml(path)
        if not isinstance(layer, dict) or "base" in layer:
            raise ValueError(f"{path} (a base of {hparams_file}) must be a plain key: value overlay without base:")
        _merge(merged, layer)
    return paths[0], _merge(_merge(merged, overlay), cli)


def _read_yaml(path):
    try:
        with open(path, encoding="utf-8") as f:
            return YAML().load(f) or {}
    except YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {getattr(err, 'problem', None) or err}") from None


def load_hparams(hparams_file, overrides=""):
    """``load_hyperpyyaml`` for overlay files (see :func:`resolve_hparams_file`);
    an override of a key the base file lacks raises ``KeyError``."""
    path, merged = resolve_hparams_file(hparams_file, overrides)
    with open(path, encoding="utf-8") as f:
        return load_hyperpyyaml(f, merged)
