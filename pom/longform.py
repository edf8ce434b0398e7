"""Long recordings in one call: a bounded-memory whole-file pass, and overlapping segments.

A fine-tuned model is the chain waveform -> ``Fbank`` -> ``InputNormalization``
-> CNN front end -> :class:`pom.encoder.MixerEncoder` -> CTC head (what
:mod:`pom.export.asr` writes). Called on a whole recording, its largest
tensors are the STFT (``[F, 201, 2]`` floats, ``F`` = 100 frames per second),
the CNN's first block (``[F/2, 40, 128]``: 1 GB per 16 minutes with the
paper's CNN) and, in the encoder, the feed-forward and PoM intermediates
(``[T, d_ffn]``, ``[T, k D d]``, ``T`` = 25 frames per second). Two ways
to go through an hour in one call:

**whole** (:func:`bounded_log_probs`): the same numbers as the whole-file
pass (to float rounding), in bounded pieces, inference only (no autograd).

* Fbank in pieces of ``piece_frames`` frames. With ``center=True`` frame
  ``i`` reads samples ``[i hop - n_fft/2, i hop - n_fft/2 + n_fft)``; a
  piece starts ``ceil(n_fft / 2 / hop)`` frames (2 for 25 ms / 10 ms) before
  its first kept frame, on the hop grid, so every kept frame sees exactly
  its samples (the piece's own edge padding falls on dropped frames, or on
  the recording's true edges, as in the whole pass). The log-mel ``top_db``
  clip uses the maximum over the whole recording: pieces are computed
  unclipped and clipped once with the global maximum (the same values).
* Normalisation: ``global`` (fixed statistics) per piece; ``sentence``
  (statistics of the whole recording) by the module on the whole feature
  tensor (80 floats per frame: 115 MB per hour), exactly as the whole pass.
* CNN front end in pieces: with SpeechBrain's ``same`` padding, output frame
  ``j`` of the paper's CNN (2 blocks, kernel 3, stride 2) reads input frames
  ``4j - 3 .. 4j + 3`` (:func:`cnn_geometry`: radius 3, stride 4). A piece
  starts on the stride grid, one output frame (4 input frames) before its
  first kept frame, and needs no frame after its last kept one (the last
  kept output reads up to ``4j + 3``, the piece's last frame); each piece is
  projected to ``d_model`` at once (``MixerEncoder.input_projection``, the
  absolute positions from its first frame), so the 640-wide CNN output is
  never held whole.
* Encoder layer by layer, time in chunks of ``chunk_frames`` for everything
  that is per frame (feed-forwards, LayerNorms, the CTC head), the
  convolution module in chunks with a halo of its padding + ``kernel_size - 1``
  frames on each side, the
  mixer over the whole sequence: PoM through its chunked op (two passes, no
  ``[T, k D d]`` tensor; a causal PoM through its streaming state), any
  other mixer as it is (attention: its ``O(T^2)`` cost, no worse than the
  whole pass). Peak memory: a few ``[T, d_model]`` tensors.

**segments** (:func:`segment_plan`, :func:`stitch`): windows of
``segment_seconds`` overlapping by at least ``overlap_seconds``, each
decoded as an utterance of its own, their CTC log-probabilities stitched at
the middle of each overlap (every encoder frame comes from exactly one
window) and decoded as one sequence. A window starts on the encoder's frame
grid (640 samples: hop x CNN stride), so its frames are frames of the
recording. Memory is that of a window, whatever the length; for a model
trained on short utterances it keeps the accuracy that a whole-file PoM loses
(its state averages the whole input).

Why segments by default (``auto``): with the ``make demo`` model (2.7 M
parameters, synthetic test-clean utterances concatenated, greedy decoding), the
whole-file CER exceeds decoding each utterance alone by 1.4 points at 30 s, 3.9
at 10 min and 5.1 at 25 min; 20 s windows with 4 s of overlap by 0.8 at most
(10, 30 and 45 s windows: 0.4, 1.1 and 1.3 at 10 min). ``benchmarks/README.md``
("Long recordings") has the table and ``python -m benchmarks.long_recordings``.

:class:`pom.export.modules.LongFormSequential` (the ``encoder`` of an exported
``EncoderASR`` model) picks one of them for inputs longer than
``long_seconds``; ``pom.transcribe --long_form`` sets it.

Example
-------
>>> segment_plan(10, window=4, overlap=2)
[(0, 4, 0, 3), (2, 6, 3, 5), (4, 8, 5, 7), (6, 10, 7, 10)]
>>> segment_plan(3, window=4, overlap=2)
[(0, 3, 0, 3)]

Authors
 * pom-speech contributors 2025
"""

import contextlib
import math

import torch

#: ``--long_form`` values: auto = segments for inputs longer than ``long_seconds``.
LONG_FORMS = ("auto", "segments", "whole")
#: Inputs longer than this (seconds) take the long-form path (default).
LONG_SECONDS = 30.0
#: Segment windows (seconds) and their least overlap.
SEGMENT_SECONDS = 20.0
OVERLAP_SECONDS = 4.0
#: Windows decoded together (segments).
SEGMENT_BATCH = 4
#: Fbank / CNN piece (Fbank frames of 10 ms) and encoder time chunk (encoder frames of 40 ms).
PIECE_FRAMES = 4000
CHUNK_FRAMES = 2048


# --------------------------------------------------------------------------- #
# Features
# --------------------------------------------------------------------------- #
@contextlib.contextmanager
def _unclipped(fbank):
    """Yields the ``top_db`` of ``fbank``'s log-mel (None without one), switched off inside."""
    filterbank = getattr(fbank, "compute_fbanks", None)
    if filterbank is None or not getattr(filterbank, "log_mel", False):
        yield None
        return
    top_db = filterbank.top_db
    filterbank.top_db = math.inf  # amax - inf = -inf: the clip keeps every value
    try:
        yield top_db
    finally:
        filterbank.top_db = top_db


def _fbank_geometry(fbank):
    """``(hop, n_fft)`` in samples if ``fbank`` is SpeechBrain's ``Fbank`` computed frame by
    frame (centred STFT, no deltas or context window), else None."""
    from speechbrain.lobes.features import Fbank

    if not isinstance(fbank, Fbank) or fbank.deltas or fbank.context:
        return None
    stft = fbank.compute_STFT
    if not stft.center:
        return None
    return int(stft.hop_length), int(stft.n_fft)


def feature_frames(fbank, num_samples):
    """Fbank frames of ``num_samples`` samples (``num_samples // hop + 1``), or None if unknown."""
    geometry = _fbank_geometry(fbank)
    return None if geometry is None else num_samples // geometry[0] + 1


def fbank_in_pieces(fbank, wav, piece_frames=PIECE_FRAMES):
    """``fbank(wav)`` for one waveform ``[1, samples]``, computed ``piece_frames`` frames at
    a time (the same values; any other feature module is called on the whole input).

    Example
    -------
    >>> from speechbrain.lobes.features import Fbank
    >>> fbank, wav = Fbank(n_mels=40), torch.randn(1, 16000)
    >>> torch.allclose(fbank_in_pieces(fbank, wav, piece_frames=7), fbank(wav), atol=1e-4)
    True
    """
    geometry = _fbank_geometry(fbank)
    samples = wav.shape[-1]
    if geometry is None or wav.dim() != 2 or wav.shape[0] != 1 or samples // geometry[0] + 1 <= piece_frames:
        return fbank(wav)
    hop, n_fft = geometry
    half = n_fft // 2
    margin = -(-half // hop)  # frames before a piece's first kept frame: its window starts there
    frames = samples // hop + 1
    pieces = []
    with _unclipped(fbank) as top_db:
        for first in range(0, frames, piece_frames):
            last = min(frames, first + piece_frames)
            start = max(0, first - margin)
            end = min(samples, (last - 1) * hop - half + n_fft)
            pieces.append(fbank(wav[:, start * hop : end])[:, first - start : last - start])
    feats = torch.cat(pieces, dim=1)
    del pieces
    if top_db is not None:  # the clip of the whole recording: max over all its frames - top_db
        floor = feats.amax(dim=(-2, -1), keepdim=True) - top_db
        feats = torch.maximum(feats, floor, out=feats)
    return feats


# --------------------------------------------------------------------------- #
# CNN front end
# --------------------------------------------------------------------------- #
def cnn_geometry(cnn):
    """``(radius, stride)`` in input frames of SpeechBrain's ``ConvolutionFrontEnd`` with
    ``same`` padding, odd kernels and no dilation: output frame ``j`` reads input frames
    ``stride j - radius .. stride j + radius``. None for any other front end.

    Example
    -------
    >>> from speechbrain.lobes.models.convolution import ConvolutionFrontEnd
    >>> cnn_geometry(ConvolutionFrontEnd((8, 10, 80), num_blocks=2, num_layers_per_block=1, out_channels=(8, 8),
    ...                                  kernel_sizes=(3, 3), strides=(2, 2), residuals=(False, False)))
    (3, 4)
    """
    from speechbrain.lobes.models.convolution import ConvBlock, ConvolutionFrontEnd
    from speechbrain.nnet.CNN import Conv2d

    if not isinstance(cnn, ConvolutionFrontEnd):
        return None
    radius, stride = 0, 1
    for block in cnn.children():
        if not isinstance(block, ConvBlock):
            return None
        convs = [m for m in block.convs.children() if isinstance(m, torch.nn.Module) and hasattr(m, "padding")]
        if not convs or any(not isinstance(c, Conv2d) or c.padding != "same" for c in convs):
            return None
        for conv in convs:  # time is the last axis of SpeechBrain's Conv2d (its time padding reads [-1])
            kernel, step, dilation = conv.kernel_size[-1], conv.stride[-1], conv.dilation[-1]
            if kernel % 2 == 0 or dilation != 1:
                return None
            radius += (kernel - 1) // 2 * stride
            stride *= step
    return radius, stride


def cnn_pieces(cnn, feats, piece_frames=PIECE_FRAMES, normalize=None):
    """Yields ``(first_output_frame, output)`` of ``cnn`` over ``feats`` ``[1, F, n_mels]`` in
    pieces of about ``piece_frames`` input frames (``normalize``, per frame, applied to each
    piece first); their concatenation is ``cnn(normalize(feats))``. A front end whose
    geometry is unknown (:func:`cnn_geometry`) runs in one piece."""
    geometry = cnn_geometry(cnn)
    frames = feats.shape[1]
    prepare = normalize or (lambda piece: piece)
    if geometry is None or frames <= piece_frames:
        yield 0, cnn(prepare(feats))
        return
    radius, stride = geometry
    before = -(-radius // stride) * stride  # input frames before a piece, on the stride grid
    after = max(0, radius - (stride - 1))  # the last kept output j reads up to stride j + radius
    step = max(stride, piece_frames // stride * stride)
    for first in range(0, frames, step):
        last = min(frames, first + step)
        start, end = max(0, first - before), min(frames, last + after)
        out = cnn(prepare(feats[:, start:end]))
        skip = (first - start) // stride
        keep = -(-last // stride) - first // stride
        yield first // stride, out[:, skip : skip + keep]


# --------------------------------------------------------------------------- #
# Encoder
# --------------------------------------------------------------------------- #
def _chunks(frames, chunk):
    return ((start, min(frames, start + chunk)) for start in range(0, frames, chunk))


def per_frame(module, x, chunk=CHUNK_FRAMES):
    """``module(x)`` of a module that works frame by frame, ``chunk`` frames at a time."""
    if x.shape[1] <= chunk:
        return module(x)
    return torch.cat([module(x[:, a:b]) for a, b in _chunks(x.shape[1], chunk)], dim=1)


def _mix(layer, x, chunk, pos_embs):
    """The layer's token mixer over the whole of ``x`` ``[1, T, d]`` without padding."""
    from pom.mixers.polynomial import PolynomialMixer
    from pom.ops.polynomial import polynomial_mixing_op

    mixer = layer.mixer
    if isinstance(mixer, PolynomialMixer) and type(mixer).forward is PolynomialMixer.forward:
        if mixer.causal:  # running mean: the streaming state, chunk by chunk (the same function)
            out, state = torch.empty_like(x), None
            for a, b in _chunks(x.shape[1], chunk):
                out[:, a:b], state = mixer.forward_streaming(x[:, a:b], state)
            return out
        if mixer.implementation == "plain":  # the chunked op: the same function without [T, k D d] tensors
            op = polynomial_mixing_op("chunked", mixer.polynomial_form)
            z = op(
                x, mixer.polynomial_form, mixer.polynomial_parameters(), mixer.output_proj.weight,
                mixer.output_proj.bias, None, chunk_size=chunk,
            )  # fmt: skip
            for a, b in _chunks(z.shape[1], chunk):
                z[:, a:b] = mixer.norm(z[:, a:b])
            return z
    extras = {"pos_embs": pos_embs} if layer.protocol.needs_pos_embs else {}
    return mixer(x, padding_mask=None, **extras)


def _conv_halo(module):
    conv = module.conv
    return int(conv.padding[0]) + (int(conv.kernel_size[0]) - 1) * int(conv.dilation[0])


def encoder_layer(layer, x, chunk=CHUNK_FRAMES, pos_embs=None):
    """:class:`pom.encoder.MixerConformerLayer` on ``x`` ``[1, T, d]`` (no padding), in place:
    per-frame modules in chunks of ``chunk`` frames, the convolution module in chunks with
    its halo, the mixer over the whole sequence (:func:`_mix`)."""
    frames = x.shape[1]
    for a, b in _chunks(frames, chunk):
        part = x[:, a:b]
        part += 0.5 * layer.ffn_module1(part)
    mixed = _mix(layer, per_frame(layer.norm1, x, chunk), chunk, pos_embs)
    x += mixed
    del mixed
    conv, halo = torch.empty_like(x), _conv_halo(layer.convolution_module)
    for a, b in _chunks(frames, chunk):
        start, end = max(0, a - halo), min(frames, b + halo)
        conv[:, a:b] = layer.convolution_module(x[:, start:end])[:, a - start : b - start]
    x += conv
    del conv
    for a, b in _chunks(frames, chunk):
        part = x[:, a:b]
        part.copy_(layer.norm2(part + 0.5 * layer.ffn_module2(part)))
    return x


def encode_in_chunks(encoder, x, chunk=CHUNK_FRAMES):
    """:class:`pom.encoder.MixerEncoder`'s Conformer layers and final norm on the projected
    input ``x`` ``[1, T, d_model]`` (modified in place), :func:`encoder_layer` by layer."""
    conformer = encoder.encoder
    pos_embs = conformer.pos_encoder(x) if conformer.pos_encoder is not None else None
    for layer in conformer.layers:
        x = encoder_layer(layer, x, chunk, pos_embs)
    for a, b in _chunks(x.shape[1], chunk):
        x[:, a:b] = conformer.norm(x[:, a:b])
    return x


def project(encoder, cnn_out, start=0):
    """``MixerEncoder``'s input projection and absolute positions for CNN frames from ``start``."""
    from pom.positions import sinusoidal_positions

    if cnn_out.dim() == 4:
        cnn_out = cnn_out.reshape(cnn_out.shape[0], cnn_out.shape[1], -1)
    x = encoder.input_projection(cnn_out)
    if encoder.positional_encoding == "fixed_abs_sine":
        x = x + sinusoidal_positions(x.shape[1], encoder.d_model, x.device, x.dtype, start=start)
    return x


# --------------------------------------------------------------------------- #
# The whole chain
# --------------------------------------------------------------------------- #
def split_model(modules):
    """``(features, normalize, cnn, encoder, head)`` of a fine-tuned model's modules in order
    (``compute_features, normalize, CNN, enc, *head``), or None if they are not that chain
    (a :class:`pom.encoder.MixerEncoder` giving only its output, an ``InputNormalization``)."""
    from speechbrain.processing.features import InputNormalization

    from pom.encoder import MixerEncoder

    modules = list(modules)
    if len(modules) < 4:
        return None
    features, normalize, cnn, encoder, *head = modules
    if not isinstance(normalize, InputNormalization) or not isinstance(encoder, MixerEncoder):
        return None
    if encoder.output_hidden_states or not hasattr(encoder.encoder, "layers"):
        return None
    return features, normalize, cnn, encoder, head


@torch.no_grad()
def bounded_log_probs(modules, wav, piece_frames=PIECE_FRAMES, chunk_frames=CHUNK_FRAMES):
    """The output of ``modules`` (:func:`split_model`'s chain, in eval mode) on one waveform
    ``wav`` ``[1, samples]`` without padding, computed in bounded pieces (the module
    docstring): the whole-file pass's numbers, its memory for a few ``[T, d_model]``
    tensors. No autograd."""
    parts = split_model(modules)
    if parts is None:
        raise ValueError("bounded_log_probs needs the chain compute_features, normalize, CNN, MixerEncoder, head")
    features, normalize, cnn, encoder, head = parts
    lens = torch.ones(1, device=wav.device)
    feats = fbank_in_pieces(features, wav, piece_frames)
    per_piece = None
    if normalize.norm_type == "global":  # fixed statistics: frame by frame
        per_piece = lambda piece: normalize(piece, lens)  # noqa: E731
    else:  # statistics of the whole recording, as the whole pass computes them
        feats = normalize(feats, lens)
    x = front_end(cnn, encoder, feats, piece_frames, per_piece)
    del feats
    x = encode_in_chunks(encoder, x, chunk_frames)
    for module in head:
        x = per_frame(module, x, chunk_frames)
    return x


@torch.no_grad()
def bounded_encode(cnn, encoder, feats, piece_frames=PIECE_FRAMES, chunk_frames=CHUNK_FRAMES, normalize=None):
    """``encoder(cnn(normalize(feats)))`` for one input ``[1, frames, n_mels]`` without padding:
    the CNN in pieces (:func:`cnn_pieces`, each projected at once), then
    :func:`encode_in_chunks`. ``normalize`` works frame by frame (None: none)."""
    return encode_in_chunks(encoder, front_end(cnn, encoder, feats, piece_frames, normalize), chunk_frames)


def front_end(cnn, encoder, feats, piece_frames=PIECE_FRAMES, normalize=None):
    """The encoder's input ``[1, T, d_model]``: :func:`cnn_pieces`, each projected at once
    (:func:`project`), so the CNN's output is never held whole."""
    pieces = cnn_pieces(cnn, feats, piece_frames, normalize)
    return torch.cat([project(encoder, out, start) for start, out in pieces], dim=1)


# --------------------------------------------------------------------------- #
# Segments
# --------------------------------------------------------------------------- #
def segment_plan(frames, window, overlap):
    """Windows over ``frames`` encoder frames: ``[(start, end, keep_start, keep_end), ...]``.

    Windows of ``window`` frames start every ``window - overlap`` frames; the last one ends
    at ``frames`` (it may overlap its neighbour more). Each window keeps the frames from the
    middle of its overlap with the previous window to the middle of its overlap with the
    next: the kept ranges tile ``[0, frames)`` exactly, each kept frame at least
    ``overlap // 2`` frames from its window's cut edges. One window if ``frames <= window``.
    """
    if window < 1 or not 0 <= overlap < window:
        raise ValueError(f"segments need 0 <= overlap < window, got window {window} and overlap {overlap}")
    if frames <= window:
        return [(0, frames, 0, frames)]
    starts = list(range(0, frames - window, window - overlap)) + [frames - window]
    cuts = [0] + [(starts[k + 1] + starts[k] + window) // 2 for k in range(len(starts) - 1)] + [frames]
    return [(s, s + window, cuts[k], cuts[k + 1]) for k, s in enumerate(starts)]


def stitch(plan, outputs):
    """The kept frames of each window's output (``[1, >= its frames, ...]``, frame 0 = the
    window's start) concatenated: ``[1, frames, ...]``."""
    return torch.cat([out[:, keep_start - start : keep_end - start] for (start, _, keep_start, keep_end), out
                      in zip(plan, outputs)], dim=1)  # fmt: skip


def encoder_frames(features, cnn, num_samples):
    """Encoder frames of ``num_samples`` samples (Fbank frames through the CNN's strides), or None."""
    frames = feature_frames(features, num_samples)
    geometry = cnn_geometry(cnn)
    if frames is None or geometry is None:
        return None
    return -(-frames // geometry[1])


def samples_per_frame(features, cnn):
    """Samples per encoder frame (hop x CNN stride: 640 for 10 ms and stride 4), or None."""
    geometry, cnn_geo = _fbank_geometry(features), cnn_geometry(cnn)
    return None if geometry is None or cnn_geo is None else geometry[0] * cnn_geo[1]
