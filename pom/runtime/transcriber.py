"""Audio files -> transcripts with an exported ONNX model (ONNX Runtime, numpy, soundfile).

:class:`OnnxTranscriber` reads a folder written by ``python -m pom.export RUN OUT
--onnx`` (``model.onnx`` or ``model.int8.onnx``, ``fbank.npz``, ``tokens.txt``,
``onnx.json``), computes SpeechBrain's features in numpy
(:mod:`pom.runtime.features`), runs the graph on padded batches (each file gets
the output it gets alone) and decodes greedily or with the numpy prefix beam
search (:mod:`pom.runtime.ctc`, a KenLM word n-gram when ``kenlm`` is there). A
file longer than ``long_seconds`` is decoded alone in overlapping windows
stitched at the middle of each overlap, exactly as
:class:`pom.inference.CTCModel` cuts it (:mod:`pom.runtime.segments`): memory is
that of a window batch, whatever the length. Nothing here imports torch.

Example
-------
>>> OnnxTranscriber("/nonexistent/onnx")
Traceback (most recent call last):
...
pom.runtime.transcriber.ModelError: /nonexistent/onnx has no model.onnx (give a folder of python -m pom.export ...
"""

import json
import os
import time

import numpy as np

from pom.runtime import ctc, segments
from pom.runtime.audio import AudioError, audio_info, read_audio
from pom.runtime.features import Fbank

DEFAULT_BATCH_SIZE = 8


def file_batches(durations, is_long, batch_size=DEFAULT_BATCH_SIZE):
    """Batches of file indices for ``durations`` (``{index: seconds}``): longest first, each long
    file (``is_long(seconds)``) alone, the others ``batch_size`` at a time (both transcribers).

    >>> file_batches({0: 2.0, 1: 40.0, 2: 3.0, 3: 1.0}, lambda seconds: seconds > 30, 2)
    [[1], [2, 0], [3]]
    """
    if batch_size < 1:
        raise ValueError(f"--batch_size must be at least 1, got {batch_size}")
    order = sorted(durations, key=lambda i: -durations[i])
    alone = [i for i in order if is_long(durations[i])]
    rest = [i for i in order if not is_long(durations[i])]
    return [[i] for i in alone] + [rest[k : k + batch_size] for k in range(0, len(rest), batch_size)]


def transcribe_in_batches(paths, duration, load, decode, is_long, sample_rate, batch_size, stats, advance=None):
    """The file loop of both transcribers. Yields ``(path, transcript, None)`` or ``(path, None,
    error)`` for each of ``paths`` (a missing file: "no such file"), in their order, while
    decoding them in :func:`file_batches`.
    ``duration(path)`` (seconds) and ``load(path)`` (a waveform ``[samples]``) raise
    :class:`AudioError` with a one-line message; ``decode(waveforms)`` gives their transcripts;
    ``is_long(seconds)`` sends a file to a batch of its own; ``advance(n)`` is called after ``n``
    files; the dict ``stats`` receives ``files``, ``audio_s`` (at ``sample_rate``) and ``compute_s``.

    Example
    -------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> lengths = {os.path.join(folder, name): n for name, n in (("a.flac", 8), ("b.flac", 4))}
    >>> for path in lengths:
    ...     open(path, "w").close()
    >>> paths = sorted(lengths) + [os.path.join(folder, "missing.flac")]
    >>> stats = {}
    >>> out = transcribe_in_batches(paths, lambda p: lengths[p] / 4, lambda p: [0.0] * lengths[p],
    ...                             lambda wavs: [f"{len(w)} samples" for w in wavs], lambda s: False, 4, 2, stats)
    >>> [(text, error and os.path.basename(error)) for _, text, error in out]
    [('8 samples', None), ('4 samples', None), (None, 'missing.flac: no such file')]
    >>> stats["files"], stats["audio_s"]
    (2, 3.0)
    """
    file_batches({}, None, batch_size)  # checks batch_size before any file is read
    advance = advance or (lambda n: None)
    results, durations = {}, {}
    for i, path in enumerate(paths):
        try:
            if not os.path.isfile(path):
                raise AudioError(f"{path}: no such file")
            durations[i] = duration(path)
        except AudioError as err:
            results[i] = (path, None, str(err))
    advance(len(results))
    audio_s, compute_s, decoded, following = 0.0, 0.0, 0, 0
    for indices in file_batches(durations, is_long, batch_size):
        begin = time.perf_counter()
        loaded = []
        for i in indices:
            try:
                loaded.append((i, load(paths[i])))
            except AudioError as err:
                results[i] = (paths[i], None, str(err))
        texts = decode([wav for _, wav in loaded]) if loaded else []
        for (i, wav), text in zip(loaded, texts):
            results[i] = (paths[i], text, None)
            audio_s += len(wav) / sample_rate
            decoded += 1
        compute_s += time.perf_counter() - begin
        advance(len(indices))
        while following in results:
            yield results.pop(following)
            following += 1
    while following in results:
        yield results.pop(following)
        following += 1
    stats.update(files=decoded, audio_s=audio_s, compute_s=compute_s)


__all__ = ["AudioError", "ModelError", "OnnxTranscriber"]


class ModelError(RuntimeError):
    """The ONNX model folder cannot be used (one line saying why)."""


class OnnxTranscriber:
    """An exported ONNX model, ready to transcribe.

    Arguments
    ---------
    model_dir : str
        A folder written by ``python -m pom.export RUN OUT --onnx``.
    int8 : bool
        Use ``model.int8.onnx`` (matrix products in int8).
    decoding : str
        ``greedy`` or ``beam`` (:func:`pom.runtime.ctc.prefix_beam_search`).
    beam_size : int, optional
        Beam size (default: the run's).
    lm_path, lm_alpha, lm_beta : optional
        A KenLM word n-gram (ARPA or binary) for ``beam``, its weight and word bonus (default: the run's).
    long_form, long_seconds, segment_seconds, overlap_seconds : optional
        Long recordings (``auto`` or ``segments``; None: :mod:`pom.runtime.segments`' defaults).
    threads : int, optional
        ONNX Runtime's intra-op threads (default: its own).
    """

    def __init__(
        self, model_dir, int8=False, decoding="greedy", beam_size=None, lm_path=None, lm_alpha=None, lm_beta=None,
        long_form=None, long_seconds=None, segment_seconds=None, overlap_seconds=None, threads=None,
    ):  # fmt: skip
        name = "model.int8.onnx" if int8 else "model.onnx"
        path = os.path.join(model_dir, name)
        if not os.path.isfile(path):
            raise ModelError(f"{model_dir} has no {name} (give a folder of python -m pom.export RUN OUT --onnx)")
        try:
            with open(os.path.join(model_dir, "onnx.json"), encoding="utf-8") as f:
                self.config = json.load(f)
            self.fbank = Fbank.load(os.path.join(model_dir, "fbank.npz"))
            self.tokens = ctc.Tokens.load(os.path.join(model_dir, "tokens.txt"))
        except (OSError, ValueError, KeyError) as err:
            raise ModelError(f"{model_dir}: incomplete ONNX export ({err})") from None
        if decoding not in ("greedy", "beam"):
            raise ModelError(f"--decoding must be greedy or beam, got {decoding!r}")
        if lm_path and decoding != "beam":
            raise ModelError("--lm needs --decoding beam (got 'greedy')")
        if long_form == "whole":
            raise ModelError("--long_form whole is for the PyTorch model (--model RUN); ONNX decodes in segments")
        self.long_form = long_form or segments.LONG_FORMS[0]
        self.long_seconds = segments.LONG_SECONDS if long_seconds is None else float(long_seconds)
        self.segment_seconds = segments.SEGMENT_SECONDS if segment_seconds is None else float(segment_seconds)
        self.overlap_seconds = segments.OVERLAP_SECONDS if overlap_seconds is None else float(overlap_seconds)
        try:
            segments.check_long_form(self.long_form, self.long_seconds, self.segment_seconds, self.overlap_seconds)
        except ValueError as err:
            raise ModelError(str(err)) from None
        self.decoding, self.beam_size = decoding, int(beam_size or self.config.get("beam_size", 20))
        self.lm = None
        if lm_path:
            if not os.path.isfile(lm_path):
                raise ModelError(f"--lm {lm_path} does not exist")
            try:
                self.lm = ctc.WordLM(lm_path, self.config["lm_alpha"] if lm_alpha is None else lm_alpha,
                                     self.config["lm_beta"] if lm_beta is None else lm_beta)  # fmt: skip
            except ImportError:
                raise ModelError("--lm needs the kenlm module (pip install kenlm)") from None
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.sample_rate = int(self.config["sample_rate"])
        self.samples_per_frame = int(self.config["samples_per_frame"])
        self.stats = {}

    # ------------------------------------------------------------------ model
    def run(self, feats):
        """``[(log_probs [T'_i, V]), ...]`` of a list of feature arrays ``[T_i, n_mels]``, one padded batch."""
        lens = np.array([len(f) for f in feats], dtype=np.int64)
        batch = np.zeros((len(feats), int(lens.max()), self.fbank.n_mels), dtype=np.float32)
        for i, f in enumerate(feats):
            batch[i, : len(f)] = f
        log_probs, out_lens = self.session.run(None, {"x": batch, "x_lens": lens})
        return [log_probs[i, : out_lens[i]] for i in range(len(feats))]

    def long_path(self, num_samples):
        """``"segments"`` for an input decoded alone in windows, else None."""
        return segments.long_path(num_samples / self.sample_rate, self.long_form, self.long_seconds,
                                  self.segment_seconds)  # fmt: skip

    def log_probs(self, wav):
        """CTC log-probabilities ``[T', V]`` of a waveform ``[samples]`` (windows when it is long)."""
        if self.long_path(len(wav)) == "segments":
            return self.segments(wav)
        return self.run([self.fbank(wav)])[0]

    def segments(self, wav, segment_batch=segments.SEGMENT_BATCH):
        """Overlapping windows of ``wav``, ``segment_batch`` at a time, stitched (``pom.inference.CTCModel``'s cut)."""
        step = self.samples_per_frame
        window, overlap = segments.window_frames(self.segment_seconds, self.overlap_seconds, self.sample_rate / step)
        frames = -(-self.fbank.frames(len(wav)) // int(self.config["subsampling_factor"]))
        plan = segments.segment_plan(frames, window, overlap)
        outputs = []
        for k in range(0, len(plan), segment_batch):
            group = plan[k : k + segment_batch]
            outputs += self.run(
                [self.fbank(wav[start * step : min(len(wav), end * step)]) for start, end, _, _ in group]
            )
        kept = [
            out[keep_start - start : keep_end - start] for (start, _, keep_start, keep_end), out in zip(plan, outputs)
        ]
        return np.concatenate(kept, axis=0)

    def decode(self, log_probs):
        """Transcript of ``[T', V]`` log-probabilities."""
        if self.decoding == "greedy":
            return self.tokens.text(ctc.greedy(log_probs, self.tokens.blank_id))
        return self.tokens.text(ctc.prefix_beam_search(log_probs, self.beam_size, self.tokens, self.lm))

    def transcribe(self, wav):
        """Transcript of one waveform ``[samples]`` at the model's rate."""
        return self.decode(self.log_probs(wav))

    def transcribe_file(self, path):
        """Transcript of one audio file (any rate, channels averaged)."""
        return self.transcribe(read_audio(path, self.sample_rate))

    def transcribe_files(self, paths, batch_size=DEFAULT_BATCH_SIZE, progress=None):
        """Yields ``(path, transcript, None)`` or ``(path, None, error)`` for each of ``paths``, in
        their order; files in padded batches of ``batch_size`` sorted by duration, a long file
        alone; ``self.stats``: files, ``audio_s``, ``compute_s`` (``progress`` is accepted for
        the PyTorch transcriber's signature; nothing is drawn)."""
        self.stats = {}
        yield from transcribe_in_batches(
            paths,
            duration=lambda path: audio_info(path)[0],
            load=lambda path: read_audio(path, self.sample_rate),
            decode=self.decode_waveforms,
            is_long=lambda seconds: self.long_path(int(seconds * self.sample_rate)) is not None,
            sample_rate=self.sample_rate,
            batch_size=batch_size,
            stats=self.stats,
        )

    def decode_waveforms(self, wavs):
        """Transcripts of waveforms: one alone (a long one in segments), several in a padded batch."""
        if len(wavs) == 1:
            return [self.transcribe(wavs[0])]
        return [self.decode(out) for out in self.run([self.fbank(wav) for wav in wavs])]
