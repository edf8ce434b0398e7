"""The features and the CNN front end of a long recording in bounded pieces.

A fine-tuned model's largest tensors on a whole recording are the STFT
(``[F, 201, 2]`` floats, ``F`` = 100 frames per second) and the CNN's first
block (``[F/2, 40, 128]``: 1 GB per 16 minutes with the paper's CNN). Both are
computed here piece by piece, with the numbers of the whole pass:

* Fbank (:func:`fbank_in_pieces`): with ``center=True`` frame ``i`` reads
  samples ``[i hop - n_fft/2, i hop - n_fft/2 + n_fft)``; a piece starts
  ``ceil(n_fft / 2 / hop)`` frames (2 for 25 ms / 10 ms) before its first kept
  frame, on the hop grid, so every kept frame sees exactly its samples. The
  log-mel ``top_db`` clip uses the maximum over the whole recording: pieces are
  computed unclipped and clipped once with the global maximum.
* CNN (:func:`cnn_pieces`): with SpeechBrain's ``same`` padding, output frame
  ``j`` of the paper's CNN (2 blocks, kernel 3, stride 2) reads input frames
  ``4j - 3 .. 4j + 3`` (:func:`cnn_geometry`: radius 3, stride 4). A piece
  starts on the stride grid, one output frame (4 input frames) before its
  first kept frame, and needs no frame after its last kept one.

Example
-------
>>> from speechbrain.lobes.features import Fbank
>>> fbank, wav = Fbank(n_mels=40), torch.randn(1, 16000)
>>> torch.allclose(fbank_in_pieces(fbank, wav, piece_frames=7), fbank(wav), atol=1e-4)
True
>>> feature_frames(fbank, 16000), fbank_geometry(fbank)
(101, (160, 400))
"""

import contextlib
import math

import torch

#: Fbank / CNN piece (Fbank frames of 10 ms).
PIECE_FRAMES = 4000


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


def fbank_geometry(fbank):
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
    geometry = fbank_geometry(fbank)
    return None if geometry is None else num_samples // geometry[0] + 1


def fbank_in_pieces(fbank, wav, piece_frames=PIECE_FRAMES):
    """``fbank(wav)`` for one waveform ``[1, samples]``, computed ``piece_frames`` frames at
    a time (the same values; any other feature module is called on the whole input).

    """
    geometry = fbank_geometry(fbank)
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


def cnn_blocks(cnn):
    """``[(stride, radius, reflect), ...]``: for each block of SpeechBrain's ``ConvolutionFrontEnd``
    (``same`` padding, odd kernels), its time stride (``L`` valid frames become ``ceil(L / s)``),
    the frames its padding adds at each end and whether they reflect the input (SpeechBrain's
    default ``padding_mode``) or are zeros; None for another front end.

    Example
    -------
    >>> from speechbrain.lobes.models.convolution import ConvolutionFrontEnd
    >>> cnn_blocks(ConvolutionFrontEnd((8, 10, 80), num_blocks=2, num_layers_per_block=1, out_channels=(8, 8),
    ...                                kernel_sizes=(3, 3), strides=(2, 2), residuals=(False, False)))
    [(2, 1, True), (2, 1, True)]
    """
    if cnn_geometry(cnn) is None:
        return None
    blocks = []
    for block in cnn.children():
        convs = [m for m in block.convs.children() if hasattr(m, "padding")]
        if len(convs) != 1 or convs[0].padding_mode not in ("reflect", "zeros", "constant"):
            return None
        conv = convs[0]
        blocks.append((conv.stride[-1], (conv.kernel_size[-1] - 1) // 2, conv.padding_mode == "reflect"))
    return blocks


def samples_per_frame(features, cnn):
    """Samples per encoder frame (hop x CNN stride: 640 for 10 ms and stride 4), or None."""
    geometry, cnn_geo = fbank_geometry(features), cnn_geometry(cnn)
    return None if geometry is None or cnn_geo is None else geometry[0] * cnn_geo[1]


def encoder_frames(features, cnn, num_samples):
    """Encoder frames of ``num_samples`` samples (Fbank frames through the CNN's strides), or None."""
    frames = feature_frames(features, num_samples)
    geometry = cnn_geometry(cnn)
    if frames is None or geometry is None:
        return None
    return -(-frames // geometry[1])
