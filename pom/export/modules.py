"""Modules that exported ``hyperparams.yaml`` files build (besides SpeechBrain's and :mod:`pom.encoder`).

:class:`LongFormSequential` is the ``encoder`` module of an exported
fine-tuned model (``EncoderASR`` calls it as ``encoder(wavs, wav_lens)``):
SpeechBrain's ``LengthsCapableSequential`` that decodes a recording longer
than ``long_seconds`` alone, in bounded memory (:mod:`pom.longform`).

:class:`WaveformMixerEncoder` is the ``encoder`` module of an exported
pre-trained encoder, the one ``speechbrain.inference.encoders.WaveformEncoder``
calls as ``encoder(wavs, wav_lens)``. SpeechBrain's ``encode_file`` returns the
``"embeddings"`` entry of what ``encode_batch`` returns, so the module returns a
dict: ``"embeddings"`` ``[B, T, d_model]``, and ``"hidden_states"``
``[num_layers + 1, B, T, d_model]`` when its encoder gives every layer's output
(``output_hidden_states``).

Example
-------
>>> from speechbrain.lobes.features import Fbank
>>> from speechbrain.processing.features import InputNormalization
>>> from speechbrain.lobes.models.convolution import ConvolutionFrontEnd
>>> from pom.encoder import MixerEncoder
>>> cnn = ConvolutionFrontEnd((8, 10, 80), num_blocks=2, num_layers_per_block=1, out_channels=(8, 8),
...                           kernel_sizes=(3, 3), strides=(2, 2), residuals=(False, False))
>>> enc = MixerEncoder(160, d_model=16, num_layers=2, d_ffn=32, mixer="pom", output_hidden_states=True)
>>> model = WaveformMixerEncoder(Fbank(n_mels=80), InputNormalization(norm_type="sentence"), cnn, enc).eval()
>>> out = model(torch.randn(2, 16000), torch.tensor([1.0, 0.5]))
>>> out["embeddings"].shape, out["hidden_states"].shape
(torch.Size([2, 26, 16]), torch.Size([3, 2, 26, 16]))

Authors
 * pom-speech contributors 2025
"""

import torch
from speechbrain.nnet.containers import LengthsCapableSequential

from pom import longform


class LongFormSequential(LengthsCapableSequential):
    """SpeechBrain's ``LengthsCapableSequential`` (features, normaliser, CNN, encoder, CTC
    head) with a long-form path for long recordings, in eval mode.

    An input longer than ``long_seconds`` (each of a batch: a long one is decoded alone,
    the batch's padding cut off) goes through :mod:`pom.longform`:

    * ``long_form="whole"``: the whole recording in one pass, in bounded pieces
      (:func:`pom.longform.bounded_log_probs`): the same log-probabilities as the plain
      pass (to float rounding), memory for a few ``[T, d_model]`` tensors;
    * ``"segments"``: windows of ``segment_seconds`` overlapping by at least
      ``overlap_seconds``, ``segment_batch`` at a time, their log-probabilities stitched
      at the middle of each overlap (any input longer than one window);
    * ``"auto"`` (default): ``segments`` above ``long_seconds``.

    Shorter inputs, training mode and a chain that is not ``compute_features,
    normalize (InputNormalization), CNN, MixerEncoder, head`` take the plain pass. The
    long-form path runs without autograd. Options are keyword arguments (YAML keys of the
    ``!new:`` block) and can be changed with :meth:`configure`.

    Example
    -------
    >>> from speechbrain.lobes.features import Fbank
    >>> from speechbrain.processing.features import InputNormalization
    >>> from speechbrain.lobes.models.convolution import ConvolutionFrontEnd
    >>> from pom.encoder import MixerEncoder
    >>> cnn = ConvolutionFrontEnd((8, 10, 40), num_blocks=2, num_layers_per_block=1, out_channels=(8, 8),
    ...                           kernel_sizes=(3, 3), strides=(2, 2), residuals=(False, False))
    >>> enc = MixerEncoder(80, d_model=16, num_layers=1, d_ffn=32, mixer="pom", kernel_size=3)
    >>> norm = InputNormalization(norm_type="sentence")
    >>> model = LongFormSequential(compute_features=Fbank(n_mels=40), normalize=norm, CNN=cnn, enc=enc,
    ...                            long_form="whole", long_seconds=1.0, piece_frames=24).eval()
    >>> wav = torch.randn(1, 32000)
    >>> model.long_path(wav.shape[1])
    'whole'
    >>> bounded = model(wav, torch.ones(1))
    >>> _ = model.configure(long_seconds=60.0)
    >>> torch.allclose(bounded, model(wav, torch.ones(1)), atol=1e-5)
    True
    """

    def __init__(
        self, *layers, long_form="auto", long_seconds=longform.LONG_SECONDS, segment_seconds=longform.SEGMENT_SECONDS,
        overlap_seconds=longform.OVERLAP_SECONDS, segment_batch=longform.SEGMENT_BATCH,
        piece_frames=longform.PIECE_FRAMES, chunk_frames=longform.CHUNK_FRAMES, **named_layers,
    ):  # fmt: skip
        super().__init__(*layers, **named_layers)
        self.long_form = "auto"
        self.long_seconds, self.segment_seconds, self.overlap_seconds = 0.0, 1.0, 0.0
        self.segment_batch, self.piece_frames, self.chunk_frames = 1, 1, 1
        self.configure(
            long_form=long_form, long_seconds=long_seconds, segment_seconds=segment_seconds,
            overlap_seconds=overlap_seconds, segment_batch=segment_batch, piece_frames=piece_frames,
            chunk_frames=chunk_frames,
        )  # fmt: skip

    def configure(self, **options):
        """Sets long-form options (the constructor's keywords; None keeps a value); returns self.
        A ValueError names a bad value."""
        options = {key: value for key, value in options.items() if value is not None}
        known = ("long_form", "long_seconds", "segment_seconds", "overlap_seconds", "segment_batch",
                 "piece_frames", "chunk_frames")  # fmt: skip
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(f"unknown long-form options {unknown}; known: {', '.join(known)}")
        merged = {key: options.get(key, getattr(self, key)) for key in known}
        if merged["long_form"] not in longform.LONG_FORMS:
            raise ValueError(f"long_form must be one of {longform.LONG_FORMS}, got {merged['long_form']!r}")
        if not merged["long_seconds"] >= 0:
            raise ValueError(f"long_seconds must be >= 0, got {merged['long_seconds']}")
        if not 0 <= merged["overlap_seconds"] < merged["segment_seconds"]:
            raise ValueError(
                f"segments need 0 <= overlap_seconds < segment_seconds, got {merged['overlap_seconds']} "
                f"and {merged['segment_seconds']}"
            )
        for key in ("segment_batch", "piece_frames", "chunk_frames"):
            if int(merged[key]) < 1:
                raise ValueError(f"{key} must be >= 1, got {merged[key]}")
            merged[key] = int(merged[key])
        for key in ("long_seconds", "segment_seconds", "overlap_seconds"):
            merged[key] = float(merged[key])
        for key, value in merged.items():
            setattr(self, key, value)
        return self

    def _parts(self):
        parts = longform.split_model(self.values())
        if parts is None or longform.samples_per_frame(parts[0], parts[2]) is None:
            return None
        return parts

    @property
    def sample_rate(self):
        """Sample rate of the features (None if they are not SpeechBrain's ``Fbank``)."""
        parts = self._parts()
        return None if parts is None else int(parts[0].compute_STFT.sample_rate)

    def long_path(self, num_samples):
        """``"whole"`` or ``"segments"``: the path of an input of ``num_samples`` samples, or None
        (the plain pass)."""
        parts = self._parts()
        if self.training or parts is None:
            return None
        seconds = num_samples / int(parts[0].compute_STFT.sample_rate)
        if self.long_form == "segments":
            return "segments" if seconds > self.segment_seconds else None
        if seconds <= self.long_seconds:
            return None
        return "whole" if self.long_form == "whole" else "segments"

    def forward(self, x, lengths=None):
        """``x`` ``[B, samples]`` waveforms, ``lengths`` relative lengths; CTC log-probabilities."""
        if x.dim() != 2 or self.training:
            return super().forward(x, lengths)
        total = x.shape[1]
        lengths = torch.ones(x.shape[0], device=x.device) if lengths is None else lengths
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

    def one(self, wav, path=None):
        """The output for one waveform ``[1, samples]`` through ``path`` (``"whole"``,
        ``"segments"`` or None: the plain pass)."""
        one = torch.ones(1, device=wav.device)
        if path is None:
            return super().forward(wav, one)
        if path == "whole":
            return longform.bounded_log_probs(self.values(), wav, self.piece_frames, self.chunk_frames)
        return self.segments(wav)

    @torch.no_grad()
    def segments(self, wav):
        """Overlapping windows of ``wav`` ``[1, samples]`` decoded ``segment_batch`` at a time,
        stitched (:func:`pom.longform.segment_plan`)."""
        features, _, cnn, _, _ = self._parts()
        step = longform.samples_per_frame(features, cnn)
        per_second = int(features.compute_STFT.sample_rate) / step
        window = max(1, int(round(self.segment_seconds * per_second)))
        overlap = min(window - 1, int(round(self.overlap_seconds * per_second)))
        total = wav.shape[1]
        plan = longform.segment_plan(longform.encoder_frames(features, cnn, total), window, overlap)
        if len(plan) == 1:
            return super().forward(wav, torch.ones(1, device=wav.device))
        slices = [(start * step, min(total, end * step)) for start, end, _, _ in plan]
        outputs, i = [], 0
        while i < len(slices):  # windows of one length together (all but the last are full)
            size = slices[i][1] - slices[i][0]
            group = [s for s in slices[i : i + self.segment_batch] if s[1] - s[0] == size]
            batch = torch.cat([wav[:, a:b] for a, b in group], dim=0)
            out = super().forward(batch, torch.ones(len(group), device=wav.device))
            outputs.extend(out[k : k + 1] for k in range(len(group)))
            i += len(group)
        return longform.stitch(plan, outputs)


class WaveformMixerEncoder(torch.nn.Module):
    """Waveforms -> features -> normaliser -> CNN front end -> encoder.

    Arguments
    ---------
    compute_features : callable
        Waveforms ``[B, samples]`` -> features ``[B, frames, n_mels]`` (SpeechBrain's ``Fbank``).
    normalize : torch.nn.Module
        ``normalize(features, lengths)`` (SpeechBrain's ``InputNormalization``).
    CNN : torch.nn.Module
        The front end (SpeechBrain's ``ConvolutionFrontEnd``).
    encoder : pom.encoder.MixerEncoder
        The encoder, called as ``encoder(x, wav_lens)``.
    """

    def __init__(self, compute_features, normalize, CNN, encoder):
        super().__init__()
        self.compute_features = compute_features
        self.normalize = normalize
        self.CNN = CNN
        self.encoder = encoder

    def forward(self, wavs, wav_lens=None):
        """``wavs`` ``[B, samples]``, ``wav_lens`` relative lengths ``[B]`` (None: all 1);
        returns ``{"embeddings": [B, T, d_model]}`` (and ``"hidden_states"``)."""
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0], device=wavs.device)
        feats = self.normalize(self.compute_features(wavs), wav_lens)
        out = self.encoder(self.CNN(feats), wav_lens)
        if isinstance(out, tuple):
            out, hidden = out
            return {"embeddings": out, "hidden_states": torch.stack(hidden)}
        return {"embeddings": out}
