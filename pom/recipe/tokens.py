"""The output units of the CTC head, as text <-> label indices.

:class:`CTCTokens` is SpeechBrain's ``CTCTextEncoder`` over the characters of
the training transcripts (blank 0, then the characters in code-point order; on
LibriSpeech: space, apostrophe and A-Z, 29 outputs, as SpeechBrain's BEST-RQ
CTC recipe), or a SpeechBrain ``SentencePiece`` model (BPE/unigram; blank
shares index 0 with ``<unk>``, as in SpeechBrain's CTC recipes). Used by the
fine-tuning recipe, :mod:`pom.transcribe` and :mod:`pom.export`.

Example
-------
>>> tokens = CTCTokens.characters()  # LibriSpeech's characters
>>> len(tokens), tokens.blank_index
(29, 0)
>>> ids = tokens.encode("IT'S A TEST")
>>> tokens.decode(ids)
"IT'S A TEST"
>>> dict(tokens.unknown_characters(["CAFÉ", "NAÏVE CAFÉ"]))
{'É': 2, 'Ï': 1}

Authors
 * pom-speech contributors 2025
"""

import collections
import csv
import os

from speechbrain.dataio.encoder import CTCTextEncoder
from speechbrain.utils.logger import get_logger

logger = get_logger(__name__)

#: The characters of LibriSpeech transcripts (after the blank label).
CHARACTERS = tuple(" 'ABCDEFGHIJKLMNOPQRSTUVWXYZ")
BLANK_LABEL = "<blank>"
#: The values of ``token_type``.
TOKEN_TYPES = ("char", "bpe", "unigram")


def num_outputs(token_type, bpe_vocab_size):
    """Size of the CTC output layer (blank included) for a token type: for
    characters, LibriSpeech's 29 (the fine-tuning recipe replaces it by the
    size of the vocabulary of the training transcripts when they differ).

    Example
    -------
    >>> num_outputs("char", 5000), num_outputs("bpe", 256)
    (29, 256)
    """
    if token_type == "char":
        return len(CHARACTERS) + 1
    if token_type in TOKEN_TYPES[1:]:
        return int(bpe_vocab_size)
    raise ValueError(f"token_type must be 'char', 'bpe' or 'unigram', got {token_type!r}")


def transcript_characters(csv_path, column="wrd"):
    """The characters of the ``column`` transcripts of a SpeechBrain CSV, in
    code-point order (space always included).

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "train.csv")
    >>> _ = open(path, "w", encoding="utf-8").write("ID,duration,wav,wrd\\nu1,1.0,a.wav,ÇA VA\\n")
    >>> "".join(transcript_characters(path))
    ' AVÇ'
    """
    found = {" "}
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if column not in (reader.fieldnames or []):
            raise ValueError(
                f"{csv_path} has no {column!r} column (a SpeechBrain CSV: ID,duration,wav,{column}; "
                f"its columns: {', '.join(reader.fieldnames or []) or 'none'})"
            )
        for row in reader:
            found.update(row[column] or "")
    return tuple(sorted(found))


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
    def characters(cls, path=None, train_csv=None):
        """Characters through ``CTCTextEncoder`` (blank at 0). Loaded from
        ``path`` (``label_encoder.txt``) when it exists; else built from the
        transcripts of ``train_csv`` (LibriSpeech's 29 labels without it) and
        saved to ``path`` when given."""
        encoder = CTCTextEncoder()
        if path is not None and os.path.isfile(path):
            encoder.load(path)
        else:
            labels = transcript_characters(train_csv) if train_csv else CHARACTERS
            encoder.insert_blank(BLANK_LABEL, index=0)
            encoder.update_from_iterable(labels, sequence_input=False)
            if path is not None:
                encoder.save(path)
                logger.info(f"{len(encoder)} CTC labels (blank and {len(labels)} characters) saved to {path}")
        if encoder.lab2ind.get(BLANK_LABEL) != 0 or len(encoder) < 2:
            raise ValueError(f"{path}: not a character label encoder of this recipe (blank at 0, then characters)")
        encoder.expect_len(len(encoder))  # the size is the vocabulary's, whatever it is
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
        """Label indices of ``text``. Characters outside the vocabulary have no
        label: they are left out of the CTC targets (one warning each; see
        :meth:`unknown_characters` to count them)."""
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

    def unknown_characters(self, texts):
        """``Counter`` of the characters of ``texts`` that no output can
        produce (not in the character vocabulary; for SentencePiece, those
        encoded as ``<unk>``)."""
        counts = collections.Counter(char for text in texts for char in text)
        if self.kind == "char":
            known = self.label_encoder.lab2ind
            return collections.Counter({c: n for c, n in counts.items() if c not in known})
        unk = self.sp.unk_id()
        return collections.Counter(
            {c: n for c, n in counts.items() if not c.isspace() and unk in self.sp.encode_as_ids(c)}
        )

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
