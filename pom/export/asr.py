"""A fine-tuning run as a SpeechBrain ``EncoderASR`` folder.

(About 550 lines, one job: everything ``EncoderASR`` reads of a run -- its
YAML, weights, tokenizer and decoding function -- with the check that the
folder loads back with the run's log-probabilities, and its model card.)

:class:`FinetunedRun` reads a finished run of
``recipes/LibriSpeech/finetune/train.py``: its hyperparameters
(:func:`pom.recipe.hparams.load_run_hparams`), the checkpoint it tested with
(:func:`pom.recipe.checkpoints.final_checkpoint`) and its tokens
(:meth:`pom.recipe.tokens.CTCTokens.load`). :func:`write_asr_folder` writes what
``EncoderASR.from_hparams`` reads; :func:`export_finetuned` adds an example
audio file and a model card, checks that the folder loads back (strictly)
and gives the run's log-probabilities, and puts it in place as a whole.

The folder:

* ``hyperparams.yaml`` -- features, normaliser, CNN, encoder, CTC head and
  log-softmax in one :class:`pom.export.modules.LongFormSequential` (the
  ``encoder`` module of ``EncoderASR``: SpeechBrain's
  ``LengthsCapableSequential`` that decodes a long recording alone, in bounded
  memory, see :mod:`pom.longform`; ``long_form`` and its other options are
  YAML keys that ``from_hparams(overrides=...)`` changes), the tokenizer, the decoding function (greedy, or
  SpeechBrain's ``CTCBeamSearcher`` with ``test_beam_search``, optionally with
  a KenLM n-gram) and a ``pretrainer`` that loads the files below;
* ``encoder.ckpt`` (CNN + encoder), ``head.ckpt`` (CTC head),
  ``normalizer.ckpt`` (the normalisation statistics): the checkpoint's own
  files; ``tokenizer.ckpt``: the label encoder or SentencePiece model;
* the LM file (with an LM), ``example.<ext>``, ``README.md`` (model card).

Example
-------
>>> export_finetuned("/nonexistent/run", "/tmp/out")
Traceback (most recent call last):
...
pom.export.hub.ExportError: run folder /nonexistent/run does not exist (give the output folder of a fine-tuning run)

Authors
 * pom-speech contributors 2025
"""

import json
import os
import tempfile

import torch

from pom.export.hub import (
    HPARAMS_FILE,
    PAPER,
    ExportError,
    encoder_yaml,
    example_audio,
    file_list,
    front_matter,
    load_strictly,
    place,
    pretrainer_yaml,
    staged_folder,
    usage_lines,
    yaml_value,
)

#: Tolerance of the check that the exported model gives the run's log-probabilities.
VERIFY_ATOL = 1e-5
INTERFACE = "speechbrain.inference.ASR.EncoderASR"


def is_finetuning_run(folder):
    """Whether ``folder`` is the output folder of a fine-tuning run (it holds the tokens the run built)."""
    save = os.path.join(folder, "save")
    return os.path.isfile(os.path.join(save, "label_encoder.txt")) or os.path.isdir(os.path.join(save, "tokenizer"))


class FinetunedRun:
    """A fine-tuning run, ready to be exported or compared with.

    Arguments
    ---------
    folder : str
        Output folder of ``recipes/LibriSpeech/finetune/train.py``.

    Raises
    ------
    ExportError
        The folder is missing, is not a fine-tuning run, or has no checkpoint yet.
    """

    def __init__(self, folder):
        from pom.recipe.checkpoints import final_checkpoint
        from pom.recipe.hparams import load_run_hparams
        from pom.recipe.tokens import CTCTokens

        self.folder = folder = os.path.abspath(folder)
        if not os.path.isdir(folder):
            raise ExportError(f"run folder {folder} does not exist (give the output folder of a fine-tuning run)")
        self.save_folder = os.path.join(folder, "save")
        if not is_finetuning_run(folder):
            raise ExportError(
                f"{folder} is not a fine-tuning output folder (no save/label_encoder.txt or save/tokenizer/)"
            )
        try:  # its paths follow the folder, wherever the run was made; nothing is trained or prepared
            self.hparams = load_run_hparams(folder)
        except Exception as err:  # noqa: BLE001 - any YAML/instantiation problem
            raise ExportError(f"cannot load the hyperparameters of {folder}: {err}") from None
        for key in ("pt_model", "model", "normalize", "compute_features", "token_type", "encoder_config"):
            if key not in self.hparams:
                raise ExportError(f"the hyperparameters of {folder} are not a fine-tuning configuration (no {key!r})")
        self.best_metric = self.hparams.get("best_metric", "WER")
        self.checkpoint = final_checkpoint(self.save_folder, self.best_metric)
        if self.checkpoint is None:
            raise ExportError(f"{self.save_folder} holds no checkpoint: the run has not finished an epoch yet")
        for name in ("pt_model", "model", "normalize"):
            if not os.path.isfile(self.paramfile(name)):
                raise ExportError(f"{self.paramfile(name)} is missing: checkpoint {self.checkpoint.path} is incomplete")
        try:
            self.tokens = CTCTokens.load(self.save_folder, self.hparams["token_type"], self.hparams["bpe_vocab_size"])
        except (FileNotFoundError, ValueError) as err:
            raise ExportError(str(err)) from None
        self._loaded = False

    def paramfile(self, name):
        """The file of recoverable ``name`` in the checkpoint the run tested with."""
        paramfiles = getattr(self.checkpoint, "paramfiles", None) or {}
        return str(paramfiles.get(name) or os.path.join(str(self.checkpoint.path), f"{name}.ckpt"))

    @property
    def config(self):
        """The encoder configuration (``encoder_config.json``'s keys)."""
        return dict(self.hparams["encoder_config"].config)

    def results(self, lm=False):
        """The run's ``results.json`` (``results_lm.json`` with ``lm``) as a dict, or None."""
        path = os.path.join(self.folder, "results_lm.json" if lm else "results.json")
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    @torch.no_grad()
    def log_probs(self, wavs, wav_lens=None):
        """The recipe's CTC log-probabilities ``[B, frames, outputs]`` (its modules and
        checkpoint, full context), computed as its ``compute_forward`` does at test time."""
        if not self._loaded:
            from speechbrain.utils.checkpoints import Checkpointer

            recoverables = {k: self.hparams[k] for k in ("model", "pt_model", "normalize")}
            Checkpointer(self.save_folder, recoverables=recoverables).load_checkpoint(self.checkpoint)
            for key in ("normalize", "CNN", "encoder", "back_end_ffn", "ctc_lin"):
                self.hparams[key].eval()
            self._loaded = True
        h = self.hparams
        wav_lens = torch.ones(wavs.shape[0]) if wav_lens is None else wav_lens
        feats = h["normalize"](h["compute_features"](wavs.float()), wav_lens)
        encoded = h["encoder"](h["CNN"](feats), wav_lens)
        return h["log_softmax"](h["ctc_lin"](h["back_end_ffn"](encoded)))


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
    """The long-form options of :class:`pom.export.modules.LongFormSequential` (defaults of
    :mod:`pom.longform`), as YAML keys that ``from_hparams(overrides=...)`` can change."""
    from pom import longform

    return (
        "# Long recordings (pom.longform): an input longer than long_seconds is decoded alone, in bounded\n"
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
        "# (SpeechBrain's LengthsCapableSequential, with the long-form path above)",
        "encoder: !new:pom.export.modules.LongFormSequential",
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


def export_finetuned(
    run, out, decoding="greedy", beam_size=None, lm_path=None, lm_alpha=None, lm_beta=None, overwrite=False, verify=True
):
    """Exports a fine-tuning run to ``out`` (SpeechBrain's hub format, for ``EncoderASR``).

    ``run`` is its output folder (or a :class:`FinetunedRun`). The folder is
    written beside ``out`` and renamed into place once complete and, with
    ``verify``, once ``EncoderASR.from_hparams`` loads it strictly and gives the
    run's log-probabilities on the example audio (atol 1e-5). An LM is copied
    into the folder; ``hyperparams.yaml`` names it by its absolute path (after
    moving or uploading the folder, load with ``overrides={"kenlm_model_path":
    "<new folder or hub repo>/<file>"}``). Returns the absolute path of ``out``.

    Raises
    ------
    ExportError
        With a one-line message naming the file or option and what to do.
    """
    run = run if isinstance(run, FinetunedRun) else FinetunedRun(run)
    out = os.path.abspath(out)
    with staged_folder(out, overwrite) as stage:
        lm_ref = os.path.join(out, os.path.basename(lm_path)) if lm_path else None
        written = write_asr_folder(run, stage, decoding, beam_size, lm_path, lm_alpha, lm_beta, lm_ref=lm_ref)
        test_csv = run.hparams.get("test_csv") or []
        example, described, reference = example_audio(
            [run.folder],
            stage,
            int(run.config["sample_rate"]),
            data_root=run.hparams.get("data_folder"),
            csv_files=[test_csv] if isinstance(test_csv, str) else list(test_csv),
        )
        if verify:
            _verify(run, stage, example, written["lm"])
        with open(os.path.join(stage, "README.md"), "w", encoding="utf-8") as f:
            f.write(model_card(run, out, written, example, described, reference, decoding, lm_path))
    return out


def _verify(run, folder, example, lm_name):
    from speechbrain.inference.ASR import EncoderASR

    overrides = {"kenlm_model_path": os.path.join(folder, lm_name)} if lm_name else {}
    with tempfile.TemporaryDirectory() as savedir:
        asr = load_strictly(EncoderASR, folder, savedir, overrides=overrides, run_opts={"device": "cpu"})
        labels = len(asr.tokenizer) if hasattr(asr.tokenizer, "lab2ind") else asr.tokenizer.vocab_size()
        if labels != int(run.hparams["output_neurons"]):
            raise ExportError(
                f"{folder}/tokenizer.ckpt has {labels} labels, the CTC head {run.hparams['output_neurons']} outputs"
            )
        wav = asr.load_audio(os.path.join(folder, example)).unsqueeze(0)
        lens = torch.ones(1)
        with torch.no_grad():
            ours = run.log_probs(wav, lens)
            theirs = asr.encode_batch(wav, lens)
        gap = (ours - theirs).abs().max().item() if ours.shape == theirs.shape else float("inf")
        if gap > VERIFY_ATOL:
            raise ExportError(
                f"the exported model in {folder} does not give the run's log-probabilities "
                f"(max difference {gap:.3g} > {VERIFY_ATOL}): {HPARAMS_FILE} and the run's YAML differ"
            )


def _wer_table(run):
    plain, lm = run.results() or {}, run.results(lm=True) or {}
    splits = list(dict.fromkeys(list(plain.get("splits", {})) + list(lm.get("splits", {}))))
    if not splits:
        return "No results.json in the run folder: no error rates to report.\n", []
    with_lm = bool(lm.get("splits"))
    header = "| split | WER | CER |" + (" WER +LM | CER +LM |" if with_lm else "")
    rows = [header, "|---|---|---|" + ("---|---|" if with_lm else "")]

    def cell(results, split, key):
        value = results.get("splits", {}).get(split, {}).get(key)
        return f"{value:.2f}" if isinstance(value, (int, float)) else "-"

    for split in splits:
        cells = [split, cell(plain, split, "WER"), cell(plain, split, "CER")]
        if with_lm:
            cells += [cell(lm, split, "WER"), cell(lm, split, "CER")]
        rows.append("| " + " | ".join(cells) + " |")
    notes = []
    if plain:
        notes.append(
            f"Without LM: {plain.get('decoding', '?')} decoding"
            + (f", beam {plain['beam_size']}" if plain.get("beam_size") else "")
        )
    if lm:
        notes.append(f"+LM: beam {lm.get('beam_size', '?')} with {os.path.basename(str(lm.get('lm') or '?'))}")
    index = []
    for results, tag in ((plain, ""), (lm, " +LM")):
        for split, values in results.get("splits", {}).items():
            if "WER" in values:
                index.append((split + tag, values["WER"]))
    return "\n".join(rows) + "\n\n" + ("; ".join(notes) + ".\n" if notes else ""), index


def _describe_checkpoint(run):
    ckpt = run.checkpoint
    path = str(ckpt.path)
    meta = {k: v for k, v in (getattr(ckpt, "meta", None) or {}).items() if k in ("WER", "CER", "loss")}
    values = ", ".join(f"{k} {v:.4g}" for k, v in meta.items() if isinstance(v, (int, float)))
    if os.path.basename(os.path.dirname(path)) == "averaged":
        how = "the average of the run's best checkpoints (see results.json)"
    else:
        how = f"the lowest validation {run.best_metric}" + (f": {values}" if values else "")
    return f"`{os.path.relpath(path, run.folder)}` ({how}; the checkpoint the run tested with)"


def model_card(run, out, written, example, described, reference, decoding, lm_path):
    """The ``README.md`` of an exported fine-tuned model: front matter and description."""
    h, config = run.hparams, run.config
    name = h.get("experiment_name", "pom-speech")
    table, index = _wer_table(run)
    results = []
    for split, wer in index:
        base = split.split(" ")[0]
        results.append(
            {
                "task": {"name": "Automatic Speech Recognition", "type": "automatic-speech-recognition"},
                "dataset": {
                    "name": f"LibriSpeech ({split})",
                    "type": "librispeech_asr",
                    "config": "other" if "other" in base else "clean",
                    "split": "test" if base.startswith("test") else "validation",
                },
                "metrics": [{"name": f"WER {split}", "type": "wer", "value": float(wer)}],
            }
        )
    fields = {
        "language": "en",
        "library_name": "speechbrain",
        "license": "apache-2.0",
        "pipeline_tag": "automatic-speech-recognition",
        "tags": ["automatic-speech-recognition", "CTC", "speechbrain", "pom-speech", "best-rq", "conformer",
                 str(config["mixer"]), "pytorch"],
        "datasets": ["librispeech_asr"],
        "metrics": ["wer", "cer"],
    }  # fmt: skip
    if results:
        fields["model-index"] = [{"name": f"pom-speech {name}", "results": results}]
    plain = run.results() or {}
    params = plain.get("params_total")
    lines = usage_lines(INTERFACE, out, example)
    files = file_list(written["files"]) + [f"* `{example}`: {described}", "* `README.md`: this card"]
    decoding_text = "greedy CTC decoding" if decoding == "greedy" else "SpeechBrain's CTC beam search"
    if lm_path:
        decoding_text += f" with the n-gram LM `{os.path.basename(lm_path)}`"
    lm_note = ""
    if written["lm"]:
        lm_note = (
            "\n\nThe LM is named by its absolute path in hyperparams.yaml: after moving or uploading this folder, "
            f"pass `overrides={{'kenlm_model_path': '<folder or hub repo>/{written['lm']}'}}` to `from_hparams`."
        )
    example_note = f"\n\nReference transcript of the example: {reference}" if reference else ""
    splits = ", ".join(plain.get("train_splits", [])) or "?"
    streaming = "no"
    if h.get("streaming"):
        streaming = (
            "trained with dynamic chunks, exported for full-context inference (pom.transcribe --chunk_size decodes"
        )
        streaming += " chunk by chunk)"
    if config.get("causal"):
        streaming += "; causal encoder"
    sizes = f"{h['token_type']} tokens, {h['output_neurons']} outputs" + (
        f", {params / 1e6:.2f} M parameters" if params else ""
    )
    return f"""{front_matter(fields)}

# {name}: {config["mixer"]} Conformer, BEST-RQ pre-trained, CTC fine-tuned

A CTC speech recogniser trained with the pom-speech recipes (SpeechBrain): waveform -> Fbank ({config["n_mels"]} mels)
-> {config["norm_type"]} normalisation -> CNN front end -> a {config["num_layers"]}-layer Conformer whose token mixer
is `{config["mixer"]}` (d_model {config["d_model"]}) -> CTC head ({sizes}). Decoding: {decoding_text}.

## Use it

```python
{chr(10).join(lines)}
```

`asr.transcribe_batch(wavs, wav_lens)` transcribes a padded batch (waveforms at {config["sample_rate"]} Hz,
relative lengths); `asr.encode_batch(wavs, wav_lens)` gives the CTC log-probabilities. Needs SpeechBrain and the
`pom` package (pom-speech, for `pom.encoder.MixerEncoder`). `python -m pom.transcribe --model <run folder>` decodes
many files in batches from the run itself.{lm_note}

## Results (%)

{table}
## Files

{chr(10).join(files)}{example_note}

## Training

* run: `{run.folder}`
* checkpoint: {_describe_checkpoint(run)}
* pre-trained encoder: `{plain.get("pretrained")}`; epochs: {plain.get("epochs", "?")}; training splits: {splits}
* streaming: {streaming}

## Reference

{PAPER}
"""
