"""What ``EncoderASR`` reads of a fine-tuning run: ``hyperparams.yaml``, weights, tokenizer.

:func:`write_asr_folder` writes into a folder:

* ``hyperparams.yaml`` -- features, normaliser, CNN, encoder, CTC head and
  log-softmax in one :class:`pom.inference.CTCModel` (the ``encoder`` module of
  ``EncoderASR``: SpeechBrain's ``LengthsCapableSequential`` that decodes a long
  recording alone, in bounded memory; ``long_form`` and its other options are
  YAML keys that ``from_hparams(overrides=...)`` changes), the tokenizer, the
  decoding function (greedy, or SpeechBrain's ``CTCBeamSearcher`` with
  ``test_beam_search``, optionally with a KenLM n-gram) and a ``pretrainer``
  that loads the files below;
* ``encoder.ckpt`` (CNN + encoder), ``head.ckpt`` (CTC head),
  ``normalizer.ckpt`` (the normalisation statistics): the checkpoint's own
  files; ``tokenizer.ckpt``: the label encoder or SentencePiece model;
* the LM file (with an LM).

Example
-------
>>> print(long_form_yaml().splitlines()[-4])
long_form: auto

Authors
 * pom-speech contributors 2025
"""

import os

from pom.export.hub import HPARAMS_FILE, ExportError, encoder_yaml, place, pretrainer_yaml, yaml_value


def _class_path(obj):
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def head_yaml(hparams):
    """The CTC head of ``hparams/finetune/base.yaml`` (dropout off) and the log-softmax."""
    activation = hparams["dnn_activation"]
    slope = getattr(activation, "negative_slope", None)
    act = f"!new:{_class_path(activation)}" + (f"\n    negative_slope: {slope!r}" if slope is not None else "")
    blocks = []
    for i, suffix in enumerate(("", "2", "3"), start=1):
        blocks.append(
            f"    linear{i}: !name:speechbrain.nnet.linear.Linear\n"
            "        n_neurons: !ref <dnn_neurons>\n"
            "        bias: True\n"
            f"    bn{i}: !name:speechbrain.nnet.normalization.LayerNorm\n"
            f"    activation{suffix}: !ref <dnn_activation>"
            + ("" if i == 3 else f"\n    drop{suffix}: !new:torch.nn.Dropout\n        p: 0.0")
        )
    return (
        "# CTC head (hparams/finetune/base.yaml; dropout off)\n"
        f"dnn_neurons: {int(hparams['dnn_neurons'])}\n"
        f"output_neurons: {int(hparams['output_neurons'])}\n"
        f"blank_index: {int(hparams['blank_index'])}\n"
        f"dnn_activation: {act}\n\n"
        "back_end_ffn: !new:speechbrain.nnet.containers.Sequential\n"
        "    input_shape: [null, null, !ref <d_model>]\n" + "\n".join(blocks) + "\n\n"
        "ctc_lin: !new:speechbrain.nnet.linear.Linear\n"
        "    input_size: !ref <dnn_neurons>\n"
        "    n_neurons: !ref <output_neurons>\n\n"
        "log_softmax: !new:speechbrain.nnet.activations.Softmax\n"
        "    apply_log: True\n"
    )


def decoding_yaml(run, decoding="greedy", beam_size=None, lm_path=None, lm_alpha=None, lm_beta=None):
    """``decoding_function`` (and ``test_beam_search``) for ``greedy`` or ``beam``.
    ``lm_path`` is written as given (SpeechBrain fetches it: a path, or ``<hub repo>/<file>``)."""
    if decoding == "greedy":
        if lm_path:
            raise ExportError("--lm needs --decoding beam (got 'greedy')")
        return (
            "# Greedy CTC decoding\n"
            "decoding_function: !name:speechbrain.decoders.ctc_greedy_decode\n"
            "    blank_id: !ref <blank_index>\n"
        )
    if decoding != "beam":
        raise ExportError(f"--decoding must be greedy or beam, got {decoding!r}")
    options = dict(run.hparams["test_beam_search"])
    options.pop("kenlm_model_path", None)
    options["beam_size"] = int(beam_size if beam_size is not None else run.hparams["beam_size"])
    if lm_alpha is not None:
        options["alpha"] = float(lm_alpha)
    if lm_beta is not None:
        options["beta"] = float(lm_beta)
    lines = [
        "# CTC beam search: EncoderASR builds SpeechBrain's CTCBeamSearcher from test_beam_search and the",
        "# tokenizer's labels" + (" (kenlm_model_path: a KenLM word n-gram, fetched like any SpeechBrain file)"
                                  if lm_path else ""),
        "decoding_function: !name:speechbrain.decoders.ctc.CTCBeamSearcher",
    ]  # fmt: skip
    if lm_path:
        lines.append(f"kenlm_model_path: {yaml_value(lm_path)}")
    lines.append("test_beam_search:")
    lines += [f"    {key}: {yaml_value(value)}" for key, value in options.items()]
    if lm_path:
        lines.append("    kenlm_model_path: !ref <kenlm_model_path>")
    return "\n".join(lines) + "\n"


#: The long-form options written in ``hyperparams.yaml`` (overridable when loading).
LONG_FORM_KEYS = ("long_form", "long_seconds", "segment_seconds", "overlap_seconds")


def long_form_yaml():
    """The long-form options of :class:`pom.inference.CTCModel` (defaults of
    :mod:`pom.runtime.segments`), as YAML keys that ``from_hparams(overrides=...)`` can change."""
    from pom.runtime import segments as longform

    return (
        "# Long recordings (pom.inference.CTCModel): an input longer than long_seconds is decoded alone, in bounded\n"
        "# memory. long_form auto (or segments: any input longer than one window) = windows of\n"
        "# segment_seconds overlapping by >= overlap_seconds, their log-probabilities stitched at the middle\n"
        "# of each overlap (a model trained on short utterances keeps its accuracy); whole = the whole input\n"
        "# in one pass computed in bounded pieces (the plain pass's numbers).\n"
        f"long_form: {longform.LONG_FORMS[0]}\n"
        f"long_seconds: {longform.LONG_SECONDS!r}\n"
        f"segment_seconds: {longform.SEGMENT_SECONDS!r}\n"
        f"overlap_seconds: {longform.OVERLAP_SECONDS!r}\n"
    )


def write_asr_folder(
    run, folder, decoding="greedy", beam_size=None, lm_path=None, lm_alpha=None, lm_beta=None, link=False, lm_ref=None
):
    """Writes ``hyperparams.yaml``, the weights and the tokenizer of ``run`` (a
    :class:`FinetunedRun`) into the existing ``folder``.

    Arguments
    ---------
    run : FinetunedRun
        The run.
    folder : str
        Where to write (an empty folder).
    decoding, beam_size, lm_path, lm_alpha, lm_beta :
        Greedy or beam search (default beam size, LM weight and word bonus: the run's).
    link : bool
        Link the checkpoint and LM files instead of copying them (a folder loaded
        once and deleted, as :mod:`pom.transcribe` does); the LM is then used where it is.
    lm_ref : str, optional
        How ``hyperparams.yaml`` names the LM copied into the folder (default its path there).

    Returns
    -------
    dict
        ``{"files": [...], "lm": name of the LM in the folder or None}``.
    """
    from pom.recipe.checks import check_lm_decoding

    problem = check_lm_decoding(lm_path, decoding, options=("--lm", "--decoding beam"))
    if problem:
        raise ExportError(problem)
    h = run.hparams
    lm_name = None
    if lm_path and link:
        lm_ref = os.path.abspath(lm_path)
    elif lm_path:
        lm_name = os.path.basename(lm_path)
        place(lm_path, os.path.join(folder, lm_name))
        lm_ref = lm_ref or os.path.join(os.path.abspath(folder), lm_name)
    char = h["token_type"] == "char"
    text = [
        "# " + "#" * 76,
        f"# {h.get('experiment_name', 'pom-speech')}: a {run.config['mixer']} Conformer encoder (pom-speech), CTC",
        "# Inference with SpeechBrain's EncoderASR (needs the pom package for pom.encoder):",
        "#   from speechbrain.inference.ASR import EncoderASR",
        '#   asr = EncoderASR.from_hparams(source="<this folder>", savedir="<a cache folder>")',
        '#   asr.transcribe_file("example.flac"); asr.transcribe_batch(wavs, wav_lens)',
        f"# Written by python -m pom.export from {run.folder}",
        f"# (checkpoint {os.path.basename(str(run.checkpoint.path))}, the one the run tested with).",
        "# " + "#" * 76,
        "",
        encoder_yaml(run.config),
        head_yaml(h),
        long_form_yaml(),
        "# Waveforms [B, samples] + relative lengths -> CTC log-probabilities [B, frames, outputs]",
        "# (pom.inference.CTCModel: SpeechBrain's LengthsCapableSequential with the long-form path above)",
        "encoder: !new:pom.inference.CTCModel",
        *(f"    {k}: !ref <{k}>" for k in ("compute_features", "normalize", "CNN", "enc")),
        *(f"    {k}: !ref <{k}>" for k in ("back_end_ffn", "ctc_lin", "log_softmax")),
        *(f"    {k}: !ref <{k}>" for k in LONG_FORM_KEYS),
        "",
        "# " + ("Characters: SpeechBrain's CTCTextEncoder (blank 0)" if char else "SentencePiece (blank 0 = <unk>)"),
        "tokenizer: !new:" + ("speechbrain.dataio.encoder.CTCTextEncoder" if char
                              else "sentencepiece.SentencePieceProcessor"),
        *([
            "# As many labels as CTC outputs (CTCTextEncoder.expect_len, checked when tokenizer.ckpt loads)",
            "tokenizer_len: !apply:speechbrain.dataio.encoder.CTCTextEncoder.expect_len",
            "    [!ref <tokenizer>, !ref <output_neurons>]",
        ] if char else []),
        "",
        decoding_yaml(run, decoding, beam_size, lm_ref, lm_alpha, lm_beta),
        "modules:",
        "    encoder: !ref <encoder>",
        "",
        "# The checkpoint's layout: encoder.ckpt = [CNN, encoder] (as pre-training's model.ckpt), head.ckpt = CTC head",
        "pt_model: !new:torch.nn.ModuleList",
        "    - [!ref <CNN>, !ref <enc>]",
        "head: !new:torch.nn.ModuleList",
        "    - [!ref <back_end_ffn>, !ref <ctc_lin>]",
        "",
        pretrainer_yaml(
            [("encoder", "pt_model"), ("head", "head"), ("normalizer", "normalize"), ("tokenizer", "tokenizer")]
        ),
    ]  # fmt: skip
    with open(os.path.join(folder, HPARAMS_FILE), "w", encoding="utf-8") as f:
        f.write("\n".join(text))
    for name, recoverable in (("encoder", "pt_model"), ("head", "model"), ("normalizer", "normalize")):
        place(run.paramfile(recoverable), os.path.join(folder, f"{name}.ckpt"), link=link)
    tokenizer = os.path.join(folder, "tokenizer.ckpt")
    if char:
        run.tokens.label_encoder.save(tokenizer)
    else:
        with open(tokenizer, "wb") as f:
            f.write(run.tokens.sp.serialized_model_proto())
    files = [HPARAMS_FILE, "encoder.ckpt", "head.ckpt", "normalizer.ckpt", "tokenizer.ckpt"]
    return {"files": files + ([lm_name] if lm_name else []), "lm": lm_name}
