"""Word n-gram language model for CTC beam search, trained on transcripts.

LibriSpeech users decode with the official 4-gram (``4-gram.arpa`` from
openslr.org/11, trained on books that exclude the test chapters). The
synthetic corpus has no such model, so this module trains one on the
*training* transcripts (never the dev/test ones) and writes it in ARPA format,
which SpeechBrain's ``CTCBeamSearcher`` reads through KenLM
(``--kenlm_model_path`` of the fine-tuning recipe).

The model is interpolated Kneser-Ney (Chen & Goodman, 1998) with one
absolute discount per order, written as a back-off model as SRILM and KenLM
write theirs. For order ``n`` and history ``h`` (``n - 1`` words, ``h'`` its
last ``n - 2``)::

    P_n(w | h) = max(a_n(h w) - D_n, 0) / A_n(h) + gamma_n(h) P_{n-1}(w | h')
    gamma_n(h) = D_n N_{1+}(h .) / A_n(h),      A_n(h) = sum_w a_n(h w)
    P_0(w)     = 1 / |V|                        (V: the words, </s>, <unk>)

``a_n`` is the raw count at the highest order (and for n-grams that start
with ``<s>``) and the continuation count ``N_{1+}(. h w)`` (number of distinct
words seen before ``h w``) below it; ``D_n = n_1 / (n_1 + 2 n_2)`` from the
numbers of n-grams seen once and twice. The ARPA file lists, for each seen
n-gram, ``log10 P_n(w | h)`` and, where it is a history, ``log10 gamma``: a
back-off reader then computes exactly the interpolated probabilities.

Command line (every ``*.trans.txt`` under the given split folders)::

    python -m pom.lm --data_folder data/synthetic/LibriSpeech \\
        --splits train-clean-100 train-clean-360 train-other-500 \\
        --order 3 --out results/lm/3-gram.arpa

Example
-------
>>> import io
>>> from speechbrain.lm.arpa import read_arpa
>>> from speechbrain.lm.ngram import BackoffNgramLM
>>> arpa = io.StringIO()
>>> write_arpa(train_kneser_ney(["THE CAT SAT", "THE DOG SAT", "A CAT RAN"], order=2), arpa)
>>> _ = arpa.seek(0)
>>> num, probs, backoffs = read_arpa(arpa)
>>> num
{1: 9, 2: 10}
>>> lm = BackoffNgramLM(probs, backoffs)
>>> words = ["THE", "CAT", "SAT", "DOG", "A", "RAN", "</s>", "<unk>"]
>>> total = sum(10 ** lm.logprob(w, context=("THE",)) for w in words)
>>> round(total, 4)
1.0
"""

import argparse
import glob
import math
import os
import sys
from collections import defaultdict

from pom.recipe.files import atomic_write

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
LOG10_ZERO = -99.0  # what ARPA writers give <s>: never predicted


def _discount(counts):
    """``D = n1 / (n1 + 2 n2)`` (Ney's estimate) from a dict of counts, kept in (0, 1)."""
    n1 = sum(1 for c in counts.values() if c == 1)
    n2 = sum(1 for c in counts.values() if c == 2)
    if n1 == 0 or n2 == 0:
        return 0.5
    return min(max(n1 / (n1 + 2.0 * n2), 0.05), 0.95)


def train_kneser_ney(sentences, order=3):
    """Trains an interpolated Kneser-Ney word n-gram model.

    Arguments
    ---------
    sentences : iterable of str
        One sentence per item, words separated by spaces.
    order : int
        The n-gram order (1 to 6).

    Returns
    -------
    dict
        ``{"order": N, "ngrams": {n: {ngram tuple: (log10 prob, log10 backoff or None)}}}``,
        the input of :func:`write_arpa`.
    """
    if not 1 <= order <= 6:
        raise ValueError(f"order must be between 1 and 6, got {order}")
    raw = [defaultdict(int) for _ in range(order + 1)]  # raw[n][ngram]
    for sentence in sentences:
        words = [BOS] + sentence.split() + [EOS]
        for n in range(1, order + 1):
            for i in range(len(words) - n + 1):
                raw[n][tuple(words[i : i + n])] += 1
    if not raw[1]:
        raise ValueError("no sentence to train the language model on")

    # Adjusted counts: raw at the top order and after <s>, continuation counts below.
    adjusted = [None] + [dict() for _ in range(order)]
    adjusted[order] = dict(raw[order])
    for n in range(1, order):
        continuation = defaultdict(int)
        for ngram in raw[n + 1]:
            continuation[ngram[1:]] += 1
        for ngram, count in raw[n].items():
            adjusted[n][ngram] = count if ngram[0] == BOS else continuation.get(ngram, 0)
    adjusted[1].pop((BOS,), None)  # <s> is a context, never a prediction

    vocabulary = sorted({g[0] for g in raw[1]} - {BOS} | {UNK})
    probs = [None] + [dict() for _ in range(order)]
    gammas = [None] + [dict() for _ in range(order)]
    for n in range(1, order + 1):
        counts = {g: c for g, c in adjusted[n].items() if c > 0}
        discount = _discount(counts)
        totals, types = defaultdict(float), defaultdict(int)
        for ngram, count in counts.items():
            totals[ngram[:-1]] += count
            types[ngram[:-1]] += 1
        for history, total in totals.items():
            gammas[n][history] = discount * types[history] / total
        for ngram, count in counts.items():
            history = ngram[:-1]
            lower = 1.0 / len(vocabulary) if n == 1 else probs[n - 1][ngram[1:]]
            probs[n][ngram] = (count - discount) / totals[history] + gammas[n][history] * lower
        if n == 1:
            probs[1][(UNK,)] = gammas[1][()] / len(vocabulary)

    ngrams = {n: {} for n in range(1, order + 1)}
    for n in range(1, order + 1):
        entries = dict(probs[n])
        if n == 1:
            entries[(BOS,)] = None
        for ngram, prob in entries.items():
            logprob = LOG10_ZERO if prob is None else math.log10(prob)
            backoff = None
            if n < order and ngram in gammas[n + 1]:
                backoff = math.log10(gammas[n + 1][ngram])
            ngrams[n][ngram] = (logprob, backoff)
    return {"order": order, "ngrams": ngrams}


def write_arpa(model, stream):
    """Writes a model from :func:`train_kneser_ney` as an ARPA file to ``stream``."""
    ngrams = model["ngrams"]
    stream.write("\n\\data\\\n")
    for n in sorted(ngrams):
        stream.write(f"ngram {n}={len(ngrams[n])}\n")
    for n in sorted(ngrams):
        stream.write(f"\n\\{n}-grams:\n")
        for ngram in sorted(ngrams[n]):
            logprob, backoff = ngrams[n][ngram]
            line = f"{logprob:.6f}\t{' '.join(ngram)}"
            if backoff is not None:
                line += f"\t{backoff:.6f}"
            stream.write(line + "\n")
    stream.write("\n\\end\\\n")


def read_transcripts(data_folder, splits):
    """The sentences of every ``*.trans.txt`` under ``data_folder/<split>`` (LibriSpeech layout)."""
    sentences = []
    for split in splits:
        folder = os.path.join(data_folder, split)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{folder} does not exist: pass --data_folder=/path/to/LibriSpeech and split names")
        files = sorted(glob.glob(os.path.join(folder, "*", "*", "*.trans.txt")))
        if not files:
            raise FileNotFoundError(f"no *.trans.txt file under {folder}")
        for path in files:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    parts = line.strip().split(" ", 1)
                    if len(parts) == 2:
                        sentences.append(parts[1])
    return sentences


def build_lm(data_folder, splits, out, order=3):
    """Trains the model on the splits' transcripts and writes ``out`` atomically.

    Returns the number of n-grams of each order."""
    model = train_kneser_ney(read_transcripts(data_folder, splits), order=order)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with atomic_write(out) as f:
        write_arpa(model, f)
    return {n: len(g) for n, g in model["ngrams"].items()}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pom.lm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_folder", required=True, help="LibriSpeech folder (holding the split folders)")
    parser.add_argument(
        "--splits", nargs="+", default=["train-clean-100", "train-clean-360", "train-other-500"],
        help="splits whose transcripts train the model (never the dev/test ones)",
    )  # fmt: skip
    parser.add_argument("--order", type=int, default=3, help="n-gram order (default 3)")
    parser.add_argument("--out", required=True, help="ARPA file to write")
    args = parser.parse_args(argv)
    try:
        counts = build_lm(args.data_folder, args.splits, args.out, args.order)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"Error: {err}")
    print(f"{args.out}: " + ", ".join(f"{n}-grams {c}" for n, c in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
