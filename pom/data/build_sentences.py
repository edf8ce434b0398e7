"""Rebuilds ``sentences.txt.gz``, the English text of the synthetic corpus.

The sentences are the usage examples of WordNet 3.0 (the quoted examples
inside the glosses of ``data.noun``, ``data.verb``, ``data.adj`` and
``data.adv``), as Debian's ``wordnet-base`` package installs them under
``/usr/share/wordnet``. WordNet is distributed under the permissive WordNet
3.0 licence (see ``WORDNET_LICENSE`` beside this file), which allows use,
copying, modification and distribution provided the notice is kept.

The shipped file was made once with::

    apt-get install wordnet-base
    python -m pom.data.build_sentences --wordnet /usr/share/wordnet

This module is only needed to rebuild the file: generating the synthetic
corpus reads the shipped ``sentences.txt.gz`` and needs no WordNet.

Example
-------
>>> normalize_sentence("he discovered that his house was not insured")
'HE DISCOVERED THAT HIS HOUSE WAS NOT INSURED'
>>> normalize_sentence("a well-known fact, isn't it?")
"A WELL KNOWN FACT ISN'T IT"
>>> normalize_sentence("he paid 20 dollars") is None  # digits are dropped
True
>>> normalize_sentence("the U.S. army") is None  # abbreviations are dropped
True

Authors
 * pom-speech contributors 2025
"""

import argparse
import gzip
import os
import re

MIN_WORDS = 4
MAX_WORDS = 30

_ALLOWED = re.compile(r"^[A-Za-z' ,;:!?\-\.()]+$")
_QUOTED = re.compile(r'"([^"]+)"')

HEADER = (
    "# English sentences for pom-speech's synthetic LibriSpeech corpus.\n"
    "# Source: usage examples of WordNet 3.0 (Princeton University),\n"
    "# Debian package wordnet-base, normalised to LibriSpeech style\n"
    "# (upper case, apostrophes, single spaces) by pom/data/build_sentences.py.\n"
    "# WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved.\n"
    "# Licence: WordNet 3.0 licence, full text in pom/data/WORDNET_LICENSE.\n"
)


def normalize_sentence(text, min_words=MIN_WORDS, max_words=MAX_WORDS):
    """Returns ``text`` in LibriSpeech style, or None when it is unsuitable.

    Unsuitable: digits or non-ASCII letters, abbreviations and acronyms
    (which a synthesizer would spell out), too few or too many words.

    Arguments
    ---------
    text : str
        One raw English sentence.
    min_words : int
        Shortest sentence kept, in words.
    max_words : int
        Longest sentence kept, in words.

    Returns
    -------
    str or None
        Upper-case words made of letters and apostrophes, separated by
        single spaces.
    """
    text = text.strip().replace("...", " ")
    if not text or not _ALLOWED.match(text):
        return None
    words = []
    for token in text.replace("-", " ").split():
        core = token.strip(",;:!?()")
        if core.endswith("."):
            core = core[:-1]
        if "." in core or not core:
            return None  # abbreviation such as U.S. or e.g.
        if any(c.isupper() for c in core[1:]):
            return None  # acronym or odd capitalisation
        core = core.strip("'")
        if not core:
            continue
        if len(core) == 1 and core.lower() not in ("a", "i"):
            return None  # single letters are spelled out
        words.append(core.upper())
    if not min_words <= len(words) <= max_words:
        return None
    return " ".join(words)


def read_wordnet_examples(wordnet_dir):
    """Yields the quoted usage examples of the four WordNet data files."""
    for pos in ("noun", "verb", "adj", "adv"):
        path = os.path.join(wordnet_dir, "data." + pos)
        with open(path, encoding="latin-1") as f:
            for line in f:
                if line.startswith("  "):
                    continue  # licence header
                parts = line.split(" | ", 1)
                if len(parts) == 2:
                    yield from _QUOTED.findall(parts[1])


def build(wordnet_dir, out_path):
    """Writes the normalised, deduplicated, sorted sentences to ``out_path``."""
    sentences = set()
    for raw in read_wordnet_examples(wordnet_dir):
        norm = normalize_sentence(raw)
        if norm is not None:
            sentences.add(norm)
    ordered = sorted(sentences)
    # mtime=0 keeps the gzip file byte-identical from one build to the next.
    with open(out_path, "wb") as raw_f:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw_f, mtime=0) as f:
            f.write(HEADER.encode("ascii"))
            f.write(("\n".join(ordered) + "\n").encode("ascii"))
    return ordered


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wordnet", default="/usr/share/wordnet")
    parser.add_argument(
        "--out",
        default=os.path.join(os.path.dirname(__file__), "sentences.txt.gz"),
    )
    args = parser.parse_args()
    sents = build(args.wordnet, args.out)
    vocab = {w for s in sents for w in s.split()}
    print(f"{len(sents)} sentences, {len(vocab)} distinct words -> {args.out}")
