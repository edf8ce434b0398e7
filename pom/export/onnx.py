"""A fine-tuning run as ONNX models for ONNX Runtime (``python -m pom.export RUN OUT --onnx``).

Written beside the hub folder's files in ``OUT``:

* ``model.onnx`` -- normalisation, CNN front end, encoder and CTC head
  (:meth:`pom.inference.CTCModel.log_probs_from_features`), the conventions of
  icefall's and sherpa-onnx's CTC models: inputs ``x`` ``(N, T, n_mels)`` float32
  (SpeechBrain's ``Fbank`` log-mel features, *not* normalised: the global or
  per-utterance normalisation is inside the graph) and ``x_lens`` ``(N,)`` int64;
  outputs ``log_probs`` ``(N, T', V)`` and ``log_probs_len`` ``(N,)`` int64
  (``T' = ceil(T / 4)``; frames past ``log_probs_len`` are padding). Batch and
  time are dynamic, and each utterance of a padded batch gets the output it gets
  alone. Metadata: ``model_type``, ``version``, ``model_author``, ``comment``,
  ``vocab_size``, ``subsampling_factor``, ``normalize_type`` (empty: inside the
  graph), ``blank_id``, ``feature_type``, ``sample_rate``, ``n_mels``, ``mixer``.
* ``model.int8.onnx`` -- the same with its matrix products quantised to int8
  (``onnxruntime.quantization.quantize_dynamic`` on ``MatMul``, weights
  ``QInt8``).
* ``tokens.txt`` -- ``symbol id`` per line (``<blk> 0``; the space character
  written ``▁``); ``fbank.npz`` -- the features (:mod:`pom.runtime.features`);
  ``onnx.json`` -- what :mod:`pom.runtime.transcriber` reads (features, frames,
  tokens, decoding, long-form defaults).

The features stay outside the graph (as in icefall and sherpa-onnx): their
numpy twin :class:`pom.runtime.features.Fbank` gives SpeechBrain's numbers.
Inputs of any length run in one call (memory grows with the length, the
attention mixers' quadratically); :mod:`pom.runtime.transcriber` decodes long
recordings in overlapping windows (:mod:`pom.runtime.segments`), the bounded
memory of ``pom.transcribe``. Before the files are put in place, the export
checks that ONNX Runtime gives the run's log-probabilities on the example audio
(:data:`VERIFY_ATOL`) and, in a padded batch with a shorter copy, the output of
each alone.

Example
-------
>>> print(tokens_txt(["<blank>", " ", "A", "B"]))
<blk> 0
▁ 1
A 2
B 3
<BLANKLINE>
"""

import json
import os
import warnings

import numpy as np
import torch

from pom.export.hub import ExportError

#: Files the ONNX export writes (beside the hub folder's).
ONNX_FILES = ("model.onnx", "model.int8.onnx", "tokens.txt", "fbank.npz", "onnx.json")
#: Largest difference allowed between ONNX Runtime (fp32) and the run's log-probabilities.
VERIFY_ATOL = 1e-3
#: ONNX opset of the export.
OPSET = 17
#: How the space character is written in tokens.txt (SentencePiece's word boundary).
SPACE = "\u2581"
BLANK = "<blk>"


class OnnxGraph(torch.nn.Module):
    """``(x, x_lens) -> (log_probs, log_probs_len)``: the exported function of a :class:`pom.inference.CTCModel`."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, x_lens):
        return self.model.log_probs_from_features(x, x_lens)


def tokens_txt(labels):
    """``tokens.txt`` of the CTC labels in index order (blank first)."""
    rows = []
    for index, label in enumerate(labels):
        if index == 0:
            label = BLANK
        label = label.replace(" ", SPACE)
        if not label or any(c.isspace() for c in label):
            raise ExportError(f"token {index} ({label!r}) cannot be written in tokens.txt")
        rows.append(f"{label} {index}")
    return "\n".join(rows) + "\n"


def export_graph(model, path, n_mels, opset=OPSET):
    """Traces ``model`` (a :class:`pom.inference.CTCModel` in eval mode) into ``path``."""
    graph = OnnxGraph(model).eval()
    torch.manual_seed(0)
    x, x_lens = torch.randn(2, 161, n_mels) * 10 - 40, torch.tensor([161, 97])
    with torch.no_grad(), warnings.catch_warnings():
        # Tracing evaluates the shape checks and the read-out's choice (pom.ops.polynomial.readout: two exact
        # forms of one function) once, and the exporter reports folding it skipped: the graph is checked
        # against the model after export, on other lengths and batch sizes.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r"(Constant folding|This model contains a squeeze)")
        torch.onnx.export(
            graph, (x, x_lens), path, input_names=["x", "x_lens"], output_names=["log_probs", "log_probs_len"],
            dynamic_axes={"x": {0: "N", 1: "T"}, "x_lens": {0: "N"}, "log_probs": {0: "N", 1: "T_out"},
                          "log_probs_len": {0: "N"}},
            opset_version=opset, dynamo=False,
        )  # fmt: skip


def add_metadata(path, metadata):
    """Writes ``metadata`` (string values) into the ONNX file's ``metadata_props``."""
    import onnx

    proto = onnx.load(path)
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.save(proto, path)


def quantize(path, int8_path):
    """``model.int8.onnx``: dynamic int8 quantisation of the matrix products (weights QInt8)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.WARNING)  # its advice to pre-process the graph concerns static quantisation
    try:
        quantize_dynamic(path, int8_path, op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)


def write_onnx(run, folder, example=None):
    """Writes :data:`ONNX_FILES` of ``run`` (a :class:`pom.export.run.FinetunedRun`) into
    ``folder`` and checks them on ``folder/example`` (the example audio). Returns the names."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ExportError("--onnx needs the onnx and onnxruntime packages (pip install onnx onnxruntime)") from None
    from pom import __version__
    from pom.inference.pieces import cnn_blocks
    from pom.runtime.features import save_fbank

    model = run.model()
    parts = model.parts()
    if parts is None:
        raise ExportError(f"{run.folder}: the model is not the chain Fbank, normaliser, CNN, MixerEncoder, CTC head")
    features, normalize, cnn, _, _ = parts
    if normalize.norm_type not in ("global", "sentence"):
        raise ExportError(f"normalisation {normalize.norm_type!r} cannot be exported (global or sentence)")
    config, h = run.config, run.hparams
    save_fbank(features, os.path.join(folder, "fbank.npz"))
    with open(os.path.join(folder, "tokens.txt"), "w", encoding="utf-8") as f:
        f.write(tokens_txt(run.tokens.vocab_list()))
    path = os.path.join(folder, "model.onnx")
    n_mels = int(config["n_mels"])
    export_graph(model, path, n_mels)
    hop, rate = int(features.compute_STFT.hop_length), int(config["sample_rate"])
    subsampling = int(np.prod([stride for stride, _, _ in cnn_blocks(cnn)]))
    metadata = {
        "model_type": "pom-speech-ctc", "version": __version__, "model_author": "pom-speech",
        "comment": f"{config['mixer']} Conformer CTC ({h.get('experiment_name', 'pom-speech')}); features: "
                   "SpeechBrain Fbank log-mel (pom.runtime.features), normalisation inside the graph",
        "vocab_size": int(h["output_neurons"]), "subsampling_factor": subsampling, "normalize_type": "",
        "blank_id": int(run.tokens.blank_index), "feature_type": "speechbrain_fbank",
        "sample_rate": rate, "n_mels": n_mels, "frame_shift_ms": 1000 * hop / rate, "mixer": str(config["mixer"]),
        "norm_type": normalize.norm_type,
    }  # fmt: skip
    add_metadata(path, metadata)
    quantize(path, os.path.join(folder, "model.int8.onnx"))
    settings = {
        "sample_rate": rate, "hop_length": hop, "n_mels": n_mels, "subsampling_factor": subsampling,
        "samples_per_frame": hop * subsampling, "blank_id": int(run.tokens.blank_index),
        "token_type": run.tokens.kind, "vocab_size": int(h["output_neurons"]),
        "beam_size": int(h.get("beam_size") or 20), "lm_alpha": float(h.get("lm_alpha", 0.5)),
        "lm_beta": float(h.get("lm_beta", 1.0)), "mixer": str(config["mixer"]), "norm_type": normalize.norm_type,
    }  # fmt: skip
    with open(os.path.join(folder, "onnx.json"), "w", encoding="utf-8") as f:
        json.dump(settings, f, indent=2)
    if example is not None:
        verify(run, folder, os.path.join(folder, example))
    return list(ONNX_FILES)


def verify(run, folder, example):
    """ONNX Runtime (fp32) on the numpy features of ``example`` gives the run's log-probabilities,
    alone and in a padded batch with its first half (each its own output); an ExportError otherwise."""
    import onnxruntime as ort

    from pom.runtime.audio import read_audio
    from pom.runtime.features import Fbank

    rate = int(run.config["sample_rate"])
    wav = read_audio(example, rate)
    fbank = Fbank.load(os.path.join(folder, "fbank.npz"))
    session = ort.InferenceSession(os.path.join(folder, "model.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ours = run.log_probs(torch.from_numpy(wav).unsqueeze(0)).numpy()[0]
    feats = fbank(wav)
    half = fbank(wav[: len(wav) // 2])
    batch = np.zeros((2, len(feats), fbank.n_mels), dtype=np.float32)
    batch[0], batch[1, : len(half)] = feats, half
    lens = np.array([len(feats), len(half)], dtype=np.int64)
    log_probs, out_lens = session.run(None, {"x": batch, "x_lens": lens})
    alone, _ = session.run(None, {"x": half[None], "x_lens": lens[1:]})
    gaps = {
        "the run's log-probabilities": float(np.abs(log_probs[0, : out_lens[0]] - ours).max()),
        "the half alone (padded batch)": float(np.abs(log_probs[1, : out_lens[1]] - alone[0]).max()),
    }
    if out_lens[0] != len(ours) or out_lens[1] != alone.shape[1]:
        raise ExportError(
            f"{folder}/model.onnx gives {out_lens.tolist()} frames, expected {len(ours)} and {alone.shape[1]}"
        )
    for what, gap in gaps.items():
        if not gap <= VERIFY_ATOL:
            raise ExportError(f"{folder}/model.onnx differs from {what} by {gap:.3g} (> {VERIFY_ATOL})")
    return gaps


def onnx_usage_lines(out, example):
    """How to run the ONNX model of ``out`` (a folder written with ``--onnx``): the command line,
    then the Python lines (onnxruntime, numpy and soundfile; no torch)."""
    out = os.path.abspath(out)
    audio = os.path.join(out, example)
    return [
        f"python -m pom.transcribe --onnx {out} {audio}   # --int8: model.int8.onnx",
        "# or in Python (onnxruntime, numpy, soundfile; no torch):",
        "from pom.runtime.transcriber import OnnxTranscriber",
        f'asr = OnnxTranscriber("{out}")',
        f'print(asr.transcribe_file("{audio}"))',
    ]
