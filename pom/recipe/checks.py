"""Checks of a run's settings before any work, each problem as one line.

The recipes' ``check_hparams`` lists every problem of their settings with these
helpers, so that ``--max_batch_len=abc`` is refused at once, naming the option
and what it expects, instead of failing later deep inside SpeechBrain:

* :func:`numbers`, :func:`integers`, :func:`one_of`, :func:`booleans` -- types
  and ranges of options;
* :func:`fp16_on_cpu` -- SpeechBrain has no fp16 on CPU: an fp16 given on the
  command line is a problem, the YAML's fp16 becomes fp32 with a printed warning;
* :func:`check_lm_decoding`, :func:`missing_lm_packages` -- decoding with an
  n-gram LM (the file and the packages CTC beam search needs).

A recipe raises :class:`ConfigurationError` for a run that cannot go on; its
``__main__`` block prints ``Error: <message>`` and exits.

Example
-------
>>> hparams = {"max_batch_len": "abc", "batch_size": -2, "token_type": "chars", "augment": True}
>>> numbers(hparams, "max_batch_len", optional=True)
["max_batch_len must be a positive number or null, got 'abc'"]
>>> integers(hparams, "batch_size")
['batch_size must be a positive integer, got -2']
>>> one_of(hparams, "token_type", ("char", "bpe"))
["token_type must be one of 'char', 'bpe', got 'chars'"]
>>> booleans(hparams, "augment")
[]

Authors
 * pom-speech contributors 2025
"""

import os
import sys

import torch
from speechbrain.utils.distributed import if_main_process


class ConfigurationError(ValueError):
    """A setting, file or checkpoint that makes the run impossible; the message is one line."""


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def numbers(hparams, *keys, minimum=0, strict=True, maximum=None, optional=False):
    """Problems of ``keys`` that are not numbers above ``minimum`` (``>=`` it
    when ``strict`` is False; None: no bound) and at most ``maximum``;
    ``optional``: null is allowed."""
    if minimum is None:
        expected = "a number"
    elif maximum is not None:
        expected = f"a number in {'(' if strict else '['}{minimum}, {maximum}]"
    elif minimum == 0:
        expected = "a positive number" if strict else "a number >= 0"
    else:
        expected = f"a number {'>' if strict else '>='} {minimum}"

    def valid(value):
        if not _is_number(value):
            return False
        above = minimum is None or (value > minimum if strict else value >= minimum)
        return above and (maximum is None or value <= maximum)

    return _problems(hparams, keys, expected, optional, valid)


def integers(hparams, *keys, minimum=1, optional=False):
    """Problems of ``keys`` that are not integers ``>= minimum``; ``optional``: null is allowed."""
    expected = {1: "a positive integer", 0: "an integer >= 0"}.get(minimum, f"an integer >= {minimum}")
    return _problems(
        hparams, keys, expected, optional, lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum
    )


def booleans(hparams, *keys):
    """Problems of ``keys`` that are not True or False."""
    return _problems(hparams, keys, "True or False", False, lambda v: isinstance(v, bool))


def one_of(hparams, key, choices):
    """The problem of ``key`` when its value is not among ``choices``."""
    expected = "one of " + ", ".join(repr(c) for c in choices)
    return _problems(hparams, (key,), expected, False, lambda v: v in choices)


def _problems(hparams, keys, expected, optional, valid):
    problems = []
    for key in keys:
        value = hparams.get(key)
        if (value is None and optional) or (value is not None and valid(value)):
            continue
        problems.append(f"{key} must be {expected}{' or null' if optional else ''}, got {value!r}")
    return problems


def fp16_on_cpu(hparams, run_opts):
    """SpeechBrain trains in fp16 on GPUs only. On CPU, the YAML's
    ``precision: fp16`` becomes fp32 in ``hparams`` with a warning printed on
    stderr; an fp16 given on the command line is returned as a problem.

    Returns
    -------
    list of str
        The problems (empty or one line).
    """
    device = run_opts.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    if not str(device).startswith("cpu"):
        return []
    if "precision" in run_opts.overridden_args:
        if run_opts.get("precision") == "fp16":
            return ["--precision=fp16 needs a GPU (SpeechBrain has no fp16 on CPU): use fp32 or bf16"]
        return []
    if hparams.get("precision") == "fp16":
        hparams["precision"] = "fp32"
        if if_main_process():
            print(
                "Warning: precision fp16 (the YAML's) needs a GPU: training in fp32 on this CPU "
                "(give --precision=fp32 or --precision=bf16 to choose)",
                file=sys.stderr,
                flush=True,
            )
    return []


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
