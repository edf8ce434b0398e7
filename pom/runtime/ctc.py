"""CTC decoding in numpy: tokens, greedy decoding and prefix beam search (with a word n-gram).

Greedy decoding takes the best label of each frame, merges repeats and drops
blanks. The prefix beam search keeps the ``beam_size`` best label sequences
(prefixes) ``y``, each with the log-probabilities of its CTC paths ending in a
blank, ``p_b(y)``, and in its last label, ``p_nb(y)``; at frame ``t``, with
``p_t(k)`` the model's log-probabilities,

.. math::

    p_b(y) &\\leftarrow (p_b(y) \\oplus p_{nb}(y)) + p_t(\\varnothing), \\qquad
    p_{nb}(y) \\leftarrow p_{nb}(y) + p_t(y_{-1}) \\\\
    p_{nb}(y k) &\\leftarrow p_{nb}(y k) \\oplus \\big((p_b(y) \\text{ if } k = y_{-1}
        \\text{ else } p_b(y) \\oplus p_{nb}(y)) + p_t(k)\\big)

(``⊕`` = log-add). With a KenLM word n-gram (the ``kenlm`` module, when it is
installed), a prefix is ranked by ``p_b ⊕ p_nb + α ln P_LM(words) + β |words|``,
the words scored as they are completed (and the last one at the end, with the
end of sentence), as SpeechBrain's ``CTCBeamSearcher`` weights them (``alpha``,
``beta``).

Example
-------
>>> import numpy as np
>>> tokens = Tokens(["<blk>", "▁", "A", "B"])
>>> log_probs = np.log(np.array([[.1, .1, .7, .1], [.1, .1, .7, .1], [.8, .1, .05, .05], [.1, .1, .7, .1],
...                              [.1, .6, .2, .1], [.1, .1, .1, .7]]))
>>> tokens.text(greedy(log_probs))
'AA B'
>>> tokens.text(prefix_beam_search(log_probs, beam_size=8, tokens=tokens))
'AA B'
"""

import math

import numpy as np

#: Labels whose log-probability is this far below the frame's best are not expanded.
TOKEN_PRUNE = 12.0
LOG10 = math.log(10.0)


class Tokens:
    """The CTC labels of ``tokens.txt``: index -> text, the space written ``▁``, blank ``<blk>``."""

    def __init__(self, labels, blank_id=0):
        self.labels, self.blank_id = list(labels), int(blank_id)
        self.pieces = ["" if i == self.blank_id else label.replace("\u2581", " ") for i, label in enumerate(labels)]

    @classmethod
    def load(cls, path):
        """Reads ``symbol id`` lines."""
        labels = {}
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                parts = line.rstrip("\n").rsplit(" ", 1)
                if len(parts) != 2 or not parts[1].isdigit():
                    raise ValueError(f"{path}:{number}: expected 'symbol id', got {line.strip()!r}")
                labels[int(parts[1])] = parts[0]
        if sorted(labels) != list(range(len(labels))):
            raise ValueError(f"{path}: the ids are not 0 .. {len(labels) - 1}")
        blank = next((i for i, label in labels.items() if label in ("<blk>", "<blank>")), 0)
        return cls([labels[i] for i in range(len(labels))], blank)

    def __len__(self):
        return len(self.labels)

    def text(self, ids):
        """Text of a label sequence (blank-free): single spaces, no space at the ends."""
        return " ".join("".join(self.pieces[int(i)] for i in ids).split())

    def starts_word(self, label):
        """Whether ``label`` ends the word before it (a space, or a piece beginning with ``▁``)."""
        return self.pieces[label].startswith(" ")


def greedy(log_probs, blank_id=0):
    """Labels of the best path of ``log_probs`` ``[T, V]``: repeats merged, blanks dropped."""
    best = np.asarray(log_probs).argmax(axis=-1)
    keep = np.ones(len(best), dtype=bool)
    keep[1:] = best[1:] != best[:-1]
    return [int(k) for k in best[keep] if k != blank_id]


class WordLM:
    """A KenLM word n-gram scoring completed words: ``alpha ln P(word | history) + beta``."""

    def __init__(self, path, alpha, beta):
        import kenlm

        self.model, self.alpha, self.beta = kenlm.Model(path), float(alpha), float(beta)

    def score(self, words, final=False):
        """``alpha ln P(words) + beta |words|`` (with the end of sentence when ``final``)."""
        if not words:
            return 0.0
        log10 = self.model.score(" ".join(words), bos=True, eos=final)
        return self.alpha * log10 * LOG10 + self.beta * len(words)


def _logadd(a, b):
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    return max(a, b) + math.log1p(math.exp(-abs(a - b)))


def prefix_beam_search(log_probs, beam_size=20, tokens=None, lm=None, blank_id=None):
    """Best label sequence of ``log_probs`` ``[T, V]`` by CTC prefix beam search (module docstring);
    ``lm`` a :class:`WordLM` (needs ``tokens`` to find words)."""
    log_probs = np.asarray(log_probs, dtype=np.float64)
    blank = tokens.blank_id if blank_id is None and tokens is not None else (blank_id or 0)
    beams = {(): (0.0, -math.inf)}  # prefix -> (p_b, p_nb)
    lm_scores = {(): 0.0}

    def lm_score(prefix, final=False):
        if lm is None:
            return 0.0
        key = (prefix, final)
        if key not in lm_scores:
            words = tokens.text(prefix).split()
            if not final and prefix and not tokens.starts_word(prefix[-1]):
                words = words[:-1]  # the last word is not finished
            lm_scores[key] = lm.score(words, final)
        return lm_scores[key]

    for frame in log_probs:
        best = frame.max()
        candidates = [k for k in np.flatnonzero(frame >= best - TOKEN_PRUNE) if k != blank]
        following = {}
        for prefix, (p_b, p_nb) in beams.items():
            total = _logadd(p_b, p_nb)
            b, nb = following.get(prefix, (-math.inf, -math.inf))
            nb = _logadd(nb, p_nb + frame[prefix[-1]]) if prefix else nb
            following[prefix] = (_logadd(b, total + frame[blank]), nb)
            for k in candidates:
                extended = prefix + (int(k),)
                b, nb = following.get(extended, (-math.inf, -math.inf))
                source = p_b if prefix and prefix[-1] == k else total
                following[extended] = (b, _logadd(nb, source + frame[k]))
        ranked = sorted(following.items(), key=lambda item: -(_logadd(*item[1]) + lm_score(item[0])))
        beams = dict(ranked[:beam_size])
    best = max(beams.items(), key=lambda item: _logadd(*item[1]) + lm_score(item[0], final=True))
    return list(best[0])
