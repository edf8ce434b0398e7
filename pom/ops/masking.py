"""Padding-aware reductions over time, shared by every linear-time mixer and op.

SpeechBrain's convention is followed throughout: a padding mask is a boolean
tensor ``[batch, time]`` that is **True at padded frames**. With
``m_t = 1 - pad_t`` and ``|V| = max(1, sum_t m_t)`` the number of valid frames,
the masked mean is

.. math::

    \\bar{h} = \\frac{1}{|V|} \\sum_t m_t \\, h_t = \\sum_t w_t \\, h_t,
    \\qquad w_t = \\frac{m_t}{|V|}

(:func:`masked_sum` and :func:`valid_frame_counts` are its two halves, which
the chunked PoM op accumulates chunk by chunk; :func:`frame_weights` gives the
``w_t`` read by the fused kernel), and its causal counterpart (a running mean,
used for streaming) is

.. math::

    \\bar{h}_t = \\frac{\\sum_{\\tau \\le t} m_\\tau h_\\tau}{\\sum_{\\tau \\le t} m_\\tau}.

With dynamic chunks (chunk size ``c``, ``L`` chunks of left context), frame
``t`` of chunk ``j = t // c`` reads the mean over frames
``[max(0, (j - L) c), (j + 1) c)``, which is what a streaming model that
processes one chunk at a time can compute (:func:`chunked_mean`).

Padded frames are removed with ``torch.where`` rather than a product, so a
non-finite value in a padded frame can never reach a valid frame. Sums of
half-precision tensors are accumulated in float32.

Example
-------
>>> import torch
>>> h = torch.tensor([[[1.0], [3.0], [100.0]]])
>>> pad = torch.tensor([[False, False, True]])
>>> masked_mean(h, pad)
tensor([[[2.]]])
>>> masked_mean(h, pad, causal=True)[0, :, 0]
tensor([1., 2., 2.])
>>> frame_weights(pad, 1, 3, "cpu")
tensor([[0.5000, 0.5000, 0.0000]])
>>> chunked_mean(torch.arange(1.0, 7.0).view(1, 6, 1), chunk_size=2)[0][0, :, 0]
tensor([1.5000, 1.5000, 2.5000, 2.5000, 3.5000, 3.5000])
"""

import torch


def lengths_to_padding_mask(lengths, max_len=None, relative=True):
    """Builds a padding mask (True at padded frames) from lengths.

    Arguments
    ---------
    lengths : torch.Tensor
        ``[batch]`` lengths, relative in ``[0, 1]`` (SpeechBrain's ``wav_lens``)
        when ``relative`` is True, else absolute frame counts.
    max_len : int
        The padded time dimension. Required for relative lengths.
    relative : bool
        Whether ``lengths`` are relative (the default) or absolute.

    Returns
    -------
    torch.Tensor
        ``[batch, max_len]`` boolean mask on the device of ``lengths``.

    Example
    -------
    >>> lengths_to_padding_mask(torch.tensor([1.0, 0.5]), max_len=4)
    tensor([[False, False, False, False],
            [False, False,  True,  True]])
    """
    if relative:
        if max_len is None:
            raise ValueError("max_len is required with relative lengths")
        abs_lens = torch.round(lengths * max_len).long()
    else:
        abs_lens = lengths.long()
        if max_len is None:
            max_len = int(abs_lens.max().item())
    abs_lens = abs_lens.clamp(min=1, max=max_len)
    steps = torch.arange(max_len, device=lengths.device)
    return steps.unsqueeze(0) >= abs_lens.unsqueeze(1)


def valid_frames(padding_mask, shape, device):
    """``[batch, time]`` boolean, True at valid frames, or None without a mask;
    checks that the mask is ``[batch, time]`` of a tensor of ``shape``."""
    if padding_mask is None:
        return None
    if padding_mask.shape != shape[:2]:
        raise ValueError(
            f"padding_mask has shape {tuple(padding_mask.shape)} but the input is "
            f"{tuple(shape)}: expected [batch, time] = {tuple(shape[:2])}"
        )
    return ~padding_mask.to(device=device, dtype=torch.bool)


def accumulation_dtype(h):
    """float32 for half-precision ``h``, else ``h``'s dtype."""
    return torch.float32 if h.dtype in (torch.float16, torch.bfloat16) else h.dtype


def _valid_only(h, valid, acc_dtype):
    """``h`` with padded frames set to 0 (by selection), in ``acc_dtype``."""
    h = h.to(acc_dtype)
    if valid is None:
        return h
    return torch.where(valid.unsqueeze(-1), h, torch.zeros((), dtype=acc_dtype, device=h.device))


def masked_sum(h, valid=None):
    """``sum_t m_t h_t`` ``[batch, 1, channels]``, in float32 for half-precision ``h``.

    ``valid`` is ``[batch, time]`` True at valid frames (see :func:`valid_frames`), or None."""
    return _valid_only(h, valid, accumulation_dtype(h)).sum(dim=1, keepdim=True)


def valid_frame_counts(valid, batch, time, dtype, device):
    """``|V| = max(1, sum_t m_t)`` per utterance, ``[batch, 1, 1]`` in ``dtype``."""
    if valid is None:
        return torch.full((batch, 1, 1), float(time), dtype=dtype, device=device)
    return valid.to(dtype).sum(dim=1, keepdim=True).clamp(min=1.0).unsqueeze(-1)


def frame_weights(padding_mask, batch, time, device):
    """``w [batch, time]`` float32: ``1 / |V|`` on valid frames, 0 on padded frames."""
    valid = valid_frames(padding_mask, (batch, time), device)
    counts = valid_frame_counts(valid, batch, time, torch.float32, device)[..., 0]
    if valid is None:
        return (1.0 / counts).expand(batch, time).contiguous()
    return valid.to(torch.float32) / counts


def masked_mean(h, padding_mask=None, causal=False):
    """Mean of ``h`` over time (dim 1) restricted to valid frames.

    Arguments
    ---------
    h : torch.Tensor
        ``[batch, time, channels]``.
    padding_mask : torch.Tensor, optional
        ``[batch, time]`` boolean, True at padded frames.
    causal : bool
        If True, returns the running mean up to each frame ``[batch, time, channels]``;
        otherwise the global mean ``[batch, 1, channels]``.

    Returns
    -------
    torch.Tensor
        The (running) mean, in the dtype of ``h``. Accumulation is done in
        float32 when ``h`` is a half-precision tensor.
    """
    if causal:
        return chunked_mean(h, padding_mask, chunk_size=1)[0]
    if padding_mask is None:
        return h.to(accumulation_dtype(h)).mean(dim=1, keepdim=True).to(h.dtype)
    valid = valid_frames(padding_mask, h.shape, h.device)
    total = masked_sum(h, valid)
    return (total / valid_frame_counts(valid, h.shape[0], h.shape[1], total.dtype, h.device)).to(h.dtype)


def chunked_mean(h, padding_mask=None, chunk_size=1, left_context_chunks=None, state=None):
    """Mean that frame ``t`` may read when frames arrive in chunks.

    Frame ``t`` of chunk ``j = t // chunk_size`` reads the mean of the valid
    frames in ``[max(0, (j - left_context_chunks) * chunk_size), (j + 1) * chunk_size)``
    (all earlier frames when ``left_context_chunks`` is None). ``chunk_size=1``
    is the causal running mean. ``state`` carries ``(sum, count)`` of the
    frames before ``h`` (streaming; unlimited left context only).

    Arguments
    ---------
    h : torch.Tensor
        ``[batch, time, channels]``.
    padding_mask : torch.Tensor, optional
        ``[batch, time]``, True at padded frames.
    chunk_size : int
        Frames per chunk.
    left_context_chunks : int, optional
        Chunks of left context; None for all.
    state : tuple, optional
        ``(sum [batch, 1, channels], count [batch, 1, 1])`` of earlier frames.

    Returns
    -------
    means : torch.Tensor
        ``[batch, time, channels]`` in the dtype of ``h``.
    state : tuple
        ``(sum, count)`` including ``h``'s valid frames.
    """
    if state is not None and left_context_chunks is not None:
        raise ValueError("chunked_mean: a streaming state needs unlimited left context (left_context_chunks=None)")
    acc_dtype = accumulation_dtype(h)
    b, t, _ = h.shape
    valid = valid_frames(padding_mask, h.shape, h.device)
    h_valid = _valid_only(h, valid, acc_dtype)
    counts = torch.ones(b, t, dtype=acc_dtype, device=h.device) if valid is None else valid.to(acc_dtype)
    zero = h_valid.new_zeros(b, 1, h.shape[2])
    sums = torch.cat([zero, torch.cumsum(h_valid, dim=1)], dim=1)  # sums[:, i] = sum of frames < i
    ns = torch.cat([counts.new_zeros(b, 1), torch.cumsum(counts, dim=1)], dim=1).unsqueeze(-1)
    steps = torch.arange(t, device=h.device)
    chunk = torch.div(steps, chunk_size, rounding_mode="floor")
    end = torch.clamp((chunk + 1) * chunk_size, max=t)
    if left_context_chunks is None:
        total, n = sums[:, end], ns[:, end]
    else:
        start = torch.clamp((chunk - left_context_chunks) * chunk_size, min=0)
        total, n = sums[:, end] - sums[:, start], ns[:, end] - ns[:, start]
    if state is not None:
        total, n = total + state[0].to(acc_dtype), n + state[1].to(acc_dtype)
        new_state = (state[0].to(acc_dtype) + sums[:, -1:], state[1].to(acc_dtype) + ns[:, -1:])
    else:
        new_state = (sums[:, -1:], ns[:, -1:])
    return (total / n.clamp(min=1.0)).to(h.dtype), new_state
