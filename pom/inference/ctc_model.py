"""A fine-tuned CTC model from waveforms to log-probabilities, with every way of running it.

:class:`CTCModel` is SpeechBrain's ``LengthsCapableSequential`` over the chain
``compute_features`` (``Fbank``) -> ``normalize`` (``InputNormalization``) ->
``CNN`` (``ConvolutionFrontEnd``) -> ``enc`` (:class:`pom.encoder.MixerEncoder`)
-> CTC head (``back_end_ffn``, ``ctc_lin``, ``log_softmax``). It is the
``encoder`` module of an exported ``EncoderASR`` folder, what
:mod:`pom.transcribe` runs, what the ONNX export traces
(:meth:`CTCModel.log_probs_from_features`), and what the recipe's modules are
wrapped in to be compared with (:meth:`pom.export.run.FinetunedRun.model`).
Its passes:

* **plain** (a padded batch): the chain as SpeechBrain calls it;
* **streaming** (``chunk_size``): the encoder chunk by chunk
  (:meth:`pom.encoder.MixerEncoder.forward_chunks`: a causal encoder carries its
  state, any other one runs with dynamic-chunk masks);
* **whole** (:meth:`CTCModel.bounded`): one recording in bounded memory, the
  plain pass's numbers: features and CNN in pieces (:mod:`pom.inference.pieces`),
  each CNN piece projected at once, then every layer through
  :meth:`pom.conformer_layer.MixerConformerLayer.forward_bounded`;
* **segments** (:meth:`CTCModel.segments`): windows decoded as utterances of
  their own and stitched (:func:`pom.runtime.segments.segment_plan`);
* **from features with frame counts** (:meth:`CTCModel.log_probs_from_features`):
  normalisation, CNN and encoder with exact masks, so that every utterance of a
  padded batch gets the numbers it gets alone (what the ONNX graph computes).

An input longer than ``long_seconds`` (each of a batch: a long one is decoded
alone) takes ``segments`` (``long_form="auto"``, the default) or ``whole``.
Why segments by default: a model trained on utterances of a few seconds loses
accuracy in one whole-file PoM pass (its state averages the whole input); windows
near the length of its training utterances lose less (the ``make demo`` model:
+10 CER points in one pass at 10 min, +3.1 with 20 s windows, +1.5 with 6 s;
``benchmarks/README.md``, "Long recordings").

Example
-------
>>> from speechbrain.lobes.features import Fbank
>>> from speechbrain.processing.features import InputNormalization
>>> from speechbrain.lobes.models.convolution import ConvolutionFrontEnd
>>> from pom.encoder import MixerEncoder
>>> cnn = ConvolutionFrontEnd((8, 10, 40), num_blocks=2, num_layers_per_block=1, out_channels=(8, 8),
...                           kernel_sizes=(3, 3), strides=(2, 2), residuals=(False, False))
>>> enc = MixerEncoder(80, d_model=16, num_layers=1, d_ffn=32, mixer="pom", kernel_size=3)
>>> model = CTCModel(compute_features=Fbank(n_mels=40), normalize=InputNormalization(norm_type="sentence"),
...                  CNN=cnn, enc=enc, long_form="whole", long_seconds=1.0, piece_frames=24).eval()
>>> wav = torch.randn(1, 32000)
>>> model.long_path(wav.shape[1])
'whole'
>>> bounded = model(wav, torch.ones(1))
>>> torch.allclose(bounded, model.configure(long_seconds=60.0)(wav, torch.ones(1)), atol=1e-5)
True
"""

import torch
from speechbrain.nnet.containers import LengthsCapableSequential

from pom.conformer_layer import CHUNK_FRAMES, per_frame
from pom.inference import pieces
from pom.runtime import segments as seg


class CTCModel(LengthsCapableSequential):
    """Features, normaliser, CNN, :class:`~pom.encoder.MixerEncoder`, CTC head; see the module docstring.

    Arguments
    ---------
    *layers, **named_layers :
        The modules in order (``compute_features, normalize, CNN, enc, *head``), as for
        SpeechBrain's ``LengthsCapableSequential``.
    long_form, long_seconds, segment_seconds, overlap_seconds :
        Long recordings (:mod:`pom.runtime.segments`): ``auto`` = segments above ``long_seconds``.
    segment_batch : int
        Windows decoded together.
    piece_frames, chunk_frames : int
        Fbank / CNN pieces and encoder time chunks of the bounded ``whole`` pass.
    chunk_size, left_context_chunks : int, optional
        Streaming: encoder frames per chunk, chunks of left context (None: full context).
    """

    OPTIONS = ("long_form", "long_seconds", "segment_seconds", "overlap_seconds", "segment_batch", "piece_frames",
               "chunk_frames", "chunk_size", "left_context_chunks")  # fmt: skip

    def __init__(
        self, *layers, long_form="auto", long_seconds=seg.LONG_SECONDS, segment_seconds=seg.SEGMENT_SECONDS,
        overlap_seconds=seg.OVERLAP_SECONDS, segment_batch=seg.SEGMENT_BATCH, piece_frames=pieces.PIECE_FRAMES,
        chunk_frames=CHUNK_FRAMES, chunk_size=None, left_context_chunks=None, **named_layers,
    ):  # fmt: skip
        super().__init__(*layers, **named_layers)
        self.long_form, self.long_seconds, self.segment_seconds, self.overlap_seconds = "auto", 0.0, 1.0, 0.0
        self.segment_batch, self.piece_frames, self.chunk_frames = 1, 1, 1
        self.chunk_size = self.left_context_chunks = None
        self.configure(
            long_form=long_form, long_seconds=long_seconds, segment_seconds=segment_seconds,
            overlap_seconds=overlap_seconds, segment_batch=segment_batch, piece_frames=piece_frames,
            chunk_frames=chunk_frames, chunk_size=chunk_size, left_context_chunks=left_context_chunks,
        )  # fmt: skip

    def configure(self, **options):
        """Sets options (the constructor's keywords; None keeps a value); returns self.
        A ValueError names a bad value."""
        options = {key: value for key, value in options.items() if value is not None}
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            raise ValueError(f"unknown options {unknown}; known: {', '.join(self.OPTIONS)}")
        merged = {key: options.get(key, getattr(self, key)) for key in self.OPTIONS}
        for key in ("long_seconds", "segment_seconds", "overlap_seconds"):
            merged[key] = float(merged[key])
        seg.check_long_form(merged["long_form"], merged["long_seconds"], merged["segment_seconds"],
                            merged["overlap_seconds"])  # fmt: skip
        for key in ("segment_batch", "piece_frames", "chunk_frames", "chunk_size", "left_context_chunks"):
            if merged[key] is None:
                continue
            if int(merged[key]) < (0 if key == "left_context_chunks" else 1):
                raise ValueError(f"{key} must be a positive number, got {merged[key]}")
            merged[key] = int(merged[key])
        for key, value in merged.items():
            setattr(self, key, value)
        return self

    # ------------------------------------------------------------------ the chain
    def parts(self):
        """``(features, normalize, cnn, encoder, head)`` if the modules are that chain (SpeechBrain's
        ``Fbank`` and ``ConvolutionFrontEnd``, an ``InputNormalization``, a
        :class:`~pom.encoder.MixerEncoder` giving only its output), else None."""
        from speechbrain.processing.features import InputNormalization

        from pom.encoder import MixerEncoder

        modules = list(self.values())
        if len(modules) < 4:
            return None
        features, normalize, cnn, encoder, *head = modules
        if not isinstance(normalize, InputNormalization) or not isinstance(encoder, MixerEncoder):
            return None
        if encoder.output_hidden_states or pieces.samples_per_frame(features, cnn) is None:
            return None
        return features, normalize, cnn, encoder, head

    def _parts(self, what):
        parts = self.parts()
        if parts is None:
            raise ValueError(
                f"{what} needs the chain Fbank, InputNormalization, ConvolutionFrontEnd, MixerEncoder, head"
            )
        return parts

    @property
    def sample_rate(self):
        """Sample rate of the features (None if they are not SpeechBrain's ``Fbank``)."""
        parts = self.parts()
        return None if parts is None else int(parts[0].compute_STFT.sample_rate)

    def long_path(self, num_samples):
        """``"whole"`` or ``"segments"``: the path of an input of ``num_samples`` samples, or None
        (the plain pass, or streaming)."""
        if self.training or self.chunk_size is not None or self.parts() is None:
            return None
        return seg.long_path(num_samples / self.sample_rate, self.long_form, self.long_seconds, self.segment_seconds)

    # ------------------------------------------------------------------ passes
    def forward(self, x, lengths=None):
        """``x`` ``[B, samples]`` waveforms, ``lengths`` relative lengths; CTC log-probabilities."""
        if self.training or x.dim() != 2:
            return super().forward(x, lengths)
        lengths = torch.ones(x.shape[0], device=x.device) if lengths is None else lengths
        if self.chunk_size is not None:
            return self.streamed(x, lengths)
        total = x.shape[1]
        sizes = [min(total, int(round(float(rel) * total))) for rel in lengths]
        paths = [self.long_path(n) for n in sizes]
        if all(path is None for path in paths):
            return super().forward(x, lengths)
        outputs = [self.one(x[i : i + 1, : sizes[i]], path) for i, path in enumerate(paths)]
        frames = max(out.shape[1] for out in outputs)
        padded = outputs[0].new_zeros(len(outputs), frames, *outputs[0].shape[2:])
        for i, out in enumerate(outputs):
            padded[i, : out.shape[1]] = out[0]
        return padded

    def plain(self, x, lengths=None):
        """The plain pass (SpeechBrain's ``LengthsCapableSequential``) whatever the options."""
        lengths = torch.ones(x.shape[0], device=x.device) if lengths is None else lengths
        return super().forward(x, lengths)

    def one(self, wav, path=None):
        """The output for one waveform ``[1, samples]`` through ``path`` (``"whole"``,
        ``"segments"`` or None: the plain pass)."""
        if path == "whole":
            return self.bounded(wav)
        if path == "segments":
            return self.segments(wav)
        return self.plain(wav)

    def streamed(self, x, lengths):
        """The chain with the encoder run ``chunk_size`` frames at a time
        (:meth:`pom.encoder.MixerEncoder.forward_chunks`); the CNN front end runs on the whole
        input (it looks a few frames ahead)."""
        features, normalize, cnn, encoder, head = self._parts("streaming")
        out = encoder.forward_chunks(cnn(normalize(features(x), lengths)), lengths, self.chunk_size,
                                     self.left_context_chunks)  # fmt: skip
        for module in head:
            out = module(out)
        return out

    @torch.no_grad()
    def bounded(self, wav):
        """The output on one waveform ``[1, samples]`` without padding, in bounded pieces: the
        whole-file pass's numbers (to float rounding), its memory for a few ``[T, d_model]``
        tensors. No autograd."""
        features, normalize, cnn, encoder, head = self._parts("the whole-file long form")
        lens = torch.ones(1, device=wav.device)
        feats = pieces.fbank_in_pieces(features, wav, self.piece_frames)
        per_piece = None
        if normalize.norm_type == "global":  # fixed statistics: frame by frame
            per_piece = lambda piece: normalize(piece, lens)  # noqa: E731
        else:  # statistics of the whole recording, as the whole pass computes them
            feats = normalize(feats, lens)
        x = bounded_front_end(cnn, encoder, feats, self.piece_frames, per_piece)
        del feats
        x = encoder.forward_bounded(x, self.chunk_frames)
        for module in head:
            x = per_frame(module, x, self.chunk_frames)
        return x

    @torch.no_grad()
    def segments(self, wav):
        """Overlapping windows of ``wav`` ``[1, samples]`` decoded ``segment_batch`` at a time,
        stitched at the middle of each overlap (:func:`pom.runtime.segments.segment_plan`)."""
        features, _, cnn, _, _ = self._parts("segments")
        step = pieces.samples_per_frame(features, cnn)
        window, overlap = seg.window_frames(self.segment_seconds, self.overlap_seconds, self.sample_rate / step)
        total = wav.shape[1]
        plan = seg.segment_plan(pieces.encoder_frames(features, cnn, total), window, overlap)
        if len(plan) == 1:
            return self.plain(wav)
        slices = [(start * step, min(total, end * step)) for start, end, _, _ in plan]
        outputs, i = [], 0
        while i < len(slices):  # windows of one length together (all but the last are full)
            size = slices[i][1] - slices[i][0]
            group = [s for s in slices[i : i + self.segment_batch] if s[1] - s[0] == size]
            out = self.plain(torch.cat([wav[:, a:b] for a, b in group], dim=0))
            outputs.extend(out[k : k + 1] for k in range(len(group)))
            i += len(group)
        kept = [out[:, keep_start - start : keep_end - start] for (start, _, keep_start, keep_end), out
                in zip(plan, outputs)]  # fmt: skip
        return torch.cat(kept, dim=1)

    def log_probs_from_features(self, feats, frame_lens):
        """CTC log-probabilities of unnormalised features ``[B, T, n_mels]`` with ``frame_lens``
        ``[B]`` valid frames each: ``(log_probs [B, T', outputs], lengths [B])``. Normalisation
        (statistics over the valid frames), CNN (before each block, the frames past an utterance's
        end set to what its ``same`` padding gives alone: :func:`pad_like_alone`) and encoder (its
        padding mask) see the valid frames only, so each utterance of a padded batch gets its
        numbers alone; frames past ``lengths`` are padding. What the exported ONNX graph computes."""
        _, normalize, cnn, encoder, head = self._parts("log_probs_from_features")
        blocks = pieces.cnn_blocks(cnn)
        if blocks is None:
            raise ValueError("log_probs_from_features needs a ConvolutionFrontEnd of one convolution per block")
        lens = frame_lens.to(torch.int64)
        x = normalize_masked(normalize, feats, valid_frames(lens, feats.shape[1]))
        for block, (stride, radius, reflect) in zip(cnn.children(), blocks):
            x = block(pad_like_alone(x, lens, radius, reflect))
            lens = torch.div(lens + (stride - 1), stride, rounding_mode="floor")
        x = encoder(x, padding_mask=~valid_frames(lens, x.shape[1]))
        for module in head:
            x = module(x)
        return x, lens


def valid_frames(lengths, frames):
    """``[B, frames]`` boolean mask, True at the first ``lengths[b]`` frames."""
    return torch.arange(frames, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def pad_like_alone(x, lengths, radius, reflect):
    """``x`` ``[B, T, ...]`` with the ``radius`` frames after each utterance's ``lengths[b]`` valid
    ones set to what a convolution's padding gives the utterance alone (the reflection
    ``x[L - 2 - k]`` for frame ``L + k``, or zeros) and the later ones zeroed, so a ``same``
    convolution of the padded batch gives each utterance its own output.

    Example
    -------
    >>> x = torch.arange(1.0, 6.0).view(1, 5, 1)
    >>> pad_like_alone(x, torch.tensor([3]), 1, reflect=True)[0, :, 0]
    tensor([1., 2., 3., 2., 0.])
    """
    frames = x.shape[1]
    shape = (-1, 1) + (1,) * (x.dim() - 2)
    steps = torch.arange(frames, device=x.device).view(1, frames, *((1,) * (x.dim() - 2)))
    ends = lengths.view(shape)
    out = x * (steps < ends).to(x.dtype)
    for k in range(radius if reflect else 0):
        source = (lengths - 2 - k).clamp(min=0).view(shape).expand(-1, 1, *x.shape[2:])
        out = torch.where(steps == ends + k, x.gather(1, source), out)
    return out


def normalize_masked(normalize, feats, valid):
    """SpeechBrain's ``InputNormalization`` (eval) with statistics over the ``valid`` frames
    ``[B, T]`` only: ``global`` subtracts and divides by the stored statistics, ``sentence``
    by the mean and (population) standard deviation of each utterance's valid frames."""
    eps = float(normalize.epsilon)
    if normalize.norm_type == "global":
        return (feats - normalize.glob_mean) / normalize.glob_std.clamp(min=eps)
    if normalize.norm_type != "sentence":
        raise ValueError(f"normalisation {normalize.norm_type!r}: only global and sentence can be exported")
    weights = valid.unsqueeze(-1).to(feats.dtype)
    count = weights.sum(dim=1, keepdim=True)
    mean = (feats * weights).sum(dim=1, keepdim=True) / count
    var = ((feats - mean) * weights).square().sum(dim=1, keepdim=True) / count
    return (feats - mean) / var.sqrt().clamp(min=eps)


def bounded_front_end(cnn, encoder, feats, piece_frames=pieces.PIECE_FRAMES, normalize=None):
    """The encoder's input ``[1, T, d_model]``: :func:`pom.inference.pieces.cnn_pieces`, each
    projected at once (:meth:`pom.encoder.MixerEncoder.project`), so the CNN's output is never
    held whole."""
    parts = pieces.cnn_pieces(cnn, feats, piece_frames, normalize)
    return torch.cat([encoder.project(out, start) for start, out in parts], dim=1)


@torch.no_grad()
def bounded_encode(cnn, encoder, feats, piece_frames=pieces.PIECE_FRAMES, chunk_frames=CHUNK_FRAMES, normalize=None):
    """``encoder(cnn(normalize(feats)))`` for one input ``[1, frames, n_mels]`` without padding, in
    bounded memory (the CNN in pieces, the encoder layer by layer in time chunks)."""
    return encoder.forward_bounded(bounded_front_end(cnn, encoder, feats, piece_frames, normalize), chunk_frames)
