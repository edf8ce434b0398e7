"""Pieces shared by the CTC fine-tuning recipe and :mod:`pom.transcribe`.

* :class:`CTCTokens` -- the output units of the CTC head: SpeechBrain's
  ``CTCTextEncoder`` over a fixed alphabet (blank 0, space, apostrophe and
  A-Z: 29 outputs, as SpeechBrain's BEST-RQ CTC recipe on LibriSpeech), or a
  SpeechBrain ``SentencePiece`` model (BPE/unigram; blank shares index 0 with
  ``<unk>``, as in SpeechBrain's CTC recipes).
* :func:`find_pretrained` -- turns ``--pretrained_path`` (a pre-training output
  folder, its ``save/`` folder, one ``CKPT+*`` folder, the exported
  ``pretrained/`` folder, or ``none``) into the files to load.
* :func:`load_pretrained` -- checks the saved encoder configuration against
  the fine-tuning YAML, then loads ``[CNN, encoder]`` and the normaliser with
  SpeechBrain's ``Pretrainer`` (strict: a missing or misshaped tensor is an
  error, not a warning).

Example
-------
>>> tokens = CTCTokens.characters()
>>> len(tokens), tokens.blank_index
(29, 0)
>>> ids = tokens.encode("IT'S A TEST")
>>> tokens.decode(ids)
"IT'S A TEST"
>>> find_pretrained("none") is None
True

Authors
 * pom-speech contributors 2025
"""

import glob
import shutil
import json
import os

import torch
from speechbrain.dataio.encoder import CTCTextEncoder
from speechbrain.utils.checkpoints import Checkpointer, torch_recovery
from speechbrain.utils.logger import get_logger
from speechbrain.utils.parameter_transfer import Pretrainer

from pom.bestrq import EncoderConfig

logger = get_logger(__name__)

#: The characters of LibriSpeech transcripts (after the blank label).
CHARACTERS = tuple(" 'ABCDEFGHIJKLMNOPQRSTUVWXYZ")
BLANK_LABEL = "<blank>"
NO_PRETRAINING = ("", "none", "null", "random")


class PretrainedMismatchError(ValueError):
    """The pre-trained encoder cannot be loaded into the fine-tuning model."""


def num_outputs(token_type, bpe_vocab_size):
    """Size of the CTC output layer (blank included) for a token type.

    Example
    -------
    >>> num_outputs("char", 5000), num_outputs("bpe", 256)
    (29, 256)
    """
    if token_type == "char":
        return len(CHARACTERS) + 1
    if token_type in ("bpe", "unigram"):
        return int(bpe_vocab_size)
    raise ValueError(f"token_type must be 'char', 'bpe' or 'unigram', got {token_type!r}")


class CTCTokens:
    """Text <-> CTC label indices, for characters or SentencePiece units.

    Build with :meth:`characters` or :meth:`sentencepiece`, or :meth:`load`
    from a fine-tuning ``save`` folder.
    """

    def __init__(self, kind, encoder=None, sp=None, blank_index=0):
        self.kind = kind
        self.label_encoder = encoder
        self.sp = sp
        self.blank_index = blank_index
        self._skipped = set()

    # ---------------------------------------------------------------- builders
    @classmethod
    def characters(cls, path=None):
        """Characters through ``CTCTextEncoder`` (blank at 0); saved to /
        loaded from ``path`` (``label_encoder.txt``) when given."""
        encoder = CTCTextEncoder()
        if path is not None and os.path.isfile(path):
            encoder.expect_len(len(CHARACTERS) + 1)
            encoder.load(path)
        else:
            encoder.insert_blank(BLANK_LABEL, index=0)
            encoder.update_from_iterable(CHARACTERS, sequence_input=False)
            encoder.expect_len(len(CHARACTERS) + 1)
            if path is not None:
                encoder.save(path)
        if len(encoder) != len(CHARACTERS) + 1 or encoder.lab2ind[BLANK_LABEL] != 0:
            raise ValueError(f"{path}: not a character label encoder of this recipe (29 labels, blank 0)")
        return cls("char", encoder=encoder, blank_index=0)

    @classmethod
    def sentencepiece(cls, model_dir, vocab_size, train_csv=None, model_type="bpe", character_coverage=1.0):
        """A SpeechBrain ``SentencePiece`` model, trained on the ``wrd``
        column of ``train_csv`` if ``model_dir`` has none yet."""
        from speechbrain.tokenizers.SentencePiece import SentencePiece

        tokenizer = SentencePiece(
            model_dir=model_dir,
            vocab_size=vocab_size,
            annotation_train=train_csv,
            annotation_read="wrd",
            model_type=model_type,
            character_coverage=character_coverage,
        )
        return cls(model_type, sp=tokenizer.sp, blank_index=0)

    @classmethod
    def load(cls, save_folder, token_type, bpe_vocab_size):
        """The tokens of a finished fine-tuning run."""
        if token_type == "char":
            path = os.path.join(save_folder, "label_encoder.txt")
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{path} is missing: not a finished fine-tuning run")
            return cls.characters(path)
        import sentencepiece

        path = os.path.join(save_folder, "tokenizer", f"{bpe_vocab_size}_{token_type}.model")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing: not a finished fine-tuning run")
        sp = sentencepiece.SentencePieceProcessor()
        sp.load(path)
        return cls(token_type, sp=sp, blank_index=0)

    # ---------------------------------------------------------------- use
    def __len__(self):
        return len(self.label_encoder) if self.kind == "char" else self.sp.vocab_size()

    def encode(self, text):
        """Label indices of ``text`` (characters outside the alphabet, e.g.
        ':' in a synthetic transcript, are left out with one warning each)."""
        if self.kind != "char":
            return self.sp.encode_as_ids(text)
        lab2ind = self.label_encoder.lab2ind
        ids = []
        for char in text:
            if char in lab2ind:
                ids.append(lab2ind[char])
            elif char not in self._skipped:
                self._skipped.add(char)
                logger.warning(f"Character {char!r} is not among the CTC labels; left out of the targets")
        return ids

    def decode(self, ids):
        """Text of a (greedy-collapsed, blank-free) label sequence."""
        ids = [int(i) for i in ids]
        if self.kind != "char":
            return self.sp.decode_ids(ids)
        return "".join(self.label_encoder.decode_ndim(ids))

    def vocab_list(self):
        """Labels in index order, for ``CTCBeamSearcher``."""
        if self.kind == "char":
            ind2lab = self.label_encoder.ind2lab
            return [ind2lab[i] for i in range(len(ind2lab))]
        return [self.sp.id_to_piece(i) for i in range(self.sp.vocab_size())]


# ---------------------------------------------------------------------- pre-trained encoder
def _is_checkpoint_dir(path):
    return os.path.isfile(os.path.join(path, "model.ckpt"))


def find_pretrained(path, import_dir=None, **convert_options):
    """Resolves ``--pretrained_path``.

    Returns ``None`` for no pre-training (``none``, ``null``, empty), else a
    dict with ``dir`` (the folder loaded from), ``model`` (``model.ckpt``:
    ``[CNN, encoder]``), ``normalize`` (or None) and ``config`` (the encoder
    configuration file, or None). Accepted: a folder holding ``model.ckpt``
    (one ``CKPT+*`` checkpoint or the exported ``pretrained/`` folder), a
    ``save/`` folder of checkpoints (the latest complete one is used), or a
    pre-training output folder (its latest checkpoint in ``save/``, else its
    ``pretrained/`` export).

    A checkpoint of SpeechBrain's BEST-RQ recipe or of the PoM authors'
    code (see :mod:`pom.convert`) is converted into ``import_dir`` once (a
    later call reuses the conversion while the source files are unchanged)
    and the converted folder is returned. ``convert_options`` (``degree=``,
    ``expansion=``) go to :func:`pom.convert.convert_checkpoint`. A
    ``model.ckpt`` of no known layout is returned as before (loading then
    reports what does not fit).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist or holds no ``model.ckpt``.
    pom.convert.CheckpointFormatError
        A foreign checkpoint with ``import_dir=None``, or one that cannot be converted.
    """
    if path is None or str(path).strip().lower() in NO_PRETRAINING:
        return None
    path = os.path.abspath(os.path.expanduser(str(path)))
    if not os.path.isdir(path):
        raise FileNotFoundError(f"pretrained_path {path} does not exist (give a pre-training output folder, a CKPT+* folder, or none)")
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
    if config is None:  # no configuration beside it: ours without one, or another code's checkpoint
        from pom import convert

        try:
            fmt = convert.detect_format(chosen)
        except convert.CheckpointFormatError:
            fmt = None  # no known layout: loading reports the mismatch, as for ours without a configuration
        if fmt not in (None, convert.OURS):
            if import_dir is None:
                raise convert.CheckpointFormatError(
                    f"pretrained_path {chosen} is a {convert.FORMAT_NAMES[fmt]}: give an import folder to convert "
                    "it into (find_pretrained(..., import_dir=...)), or convert it first with python -m pom.convert"
                )
            converted = convert.convert_checkpoint(chosen, import_dir, overwrite=True, **convert_options)
            return find_pretrained(converted)
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
            f"the pre-trained weights in {path} do not fit this model ({details}"
            f"{' ...' if len(lines) > 4 else ''})"
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
    encoder_config : pom.bestrq.EncoderConfig
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


def missing_lm_packages():
    """The packages SpeechBrain's CTC beam search needs for an n-gram LM
    (``kenlm``, ``pygtrie``) that cannot be imported here."""
    missing = []
    for module in ("kenlm", "pygtrie"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    return missing


def check_lm_decoding(lm_path, decoding, options=("kenlm_model_path", "test_decoding: beam")):
    """Checks, before any work, that an n-gram LM can be used for decoding.

    Returns None when ``lm_path`` is unset or usable, else a one-line message
    naming the file or option and what to do. ``options`` names the LM path
    option and the decoding setting it needs, as the caller's user writes them.

    Example
    -------
    >>> check_lm_decoding(None, "greedy") is None
    True
    >>> check_lm_decoding("/no/such/lm.arpa", "beam")
    "kenlm_model_path '/no/such/lm.arpa' does not exist (build one with: python -m pom.lm --help)"
    >>> check_lm_decoding("lm.arpa", "greedy", options=("--lm", "--decoding beam"))
    "--lm needs --decoding beam (got 'greedy')"
    """
    path_option, beam_setting = options
    if not lm_path:
        return None
    if decoding != "beam":
        return f"{path_option} needs {beam_setting} (got {decoding!r})"
    if not os.path.isfile(lm_path):
        return f"{path_option} {lm_path!r} does not exist (build one with: python -m pom.lm --help)"
    missing = missing_lm_packages()
    if missing:
        return f"decoding with {path_option} needs the {' and '.join(missing)} package(s): pip install kenlm pygtrie"
    return None


def count_parameters(*modules):
    """Number of parameters of ``modules``.

    Example
    -------
    >>> count_parameters(torch.nn.Linear(3, 2))
    8
    """
    return sum(p.numel() for m in modules for p in m.parameters())


def write_json(path, data):
    """Writes ``data`` as JSON under a temporary name, then renames it."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------- run record
RECORD_BASE = "hparams_base.yaml"
RECORD_OVERRIDES = "hparams_overrides.yaml"


def save_hparams_record(output_folder, base_file, merged_overrides):
    """Keeps what rebuilds the model of a run: a copy of the base YAML and the
    merged overrides (per-mixer file + command line) as YAML. SpeechBrain's
    resolved ``hyperparams.yaml`` cannot always be loaded again (its anchors
    collide when hyperpyyaml re-resolves it), so :mod:`pom.transcribe` uses these."""
    from ruamel.yaml import YAML

    shutil.copyfile(base_file, os.path.join(output_folder, RECORD_BASE))
    with open(os.path.join(output_folder, RECORD_OVERRIDES), "w", encoding="utf-8") as f:
        YAML().dump(merged_overrides or {}, f)


def load_hparams_record(output_folder, overrides=None):
    """Loads the hyperparameters of a run saved by :func:`save_hparams_record`,
    with ``overrides`` (a dict) on top."""
    from hyperpyyaml import load_hyperpyyaml
    from ruamel.yaml import YAML

    with open(os.path.join(output_folder, RECORD_OVERRIDES), encoding="utf-8") as f:
        merged = YAML().load(f) or {}
    merged.update(overrides or {})
    with open(os.path.join(output_folder, RECORD_BASE), encoding="utf-8") as f:
        return load_hyperpyyaml(f, merged)
