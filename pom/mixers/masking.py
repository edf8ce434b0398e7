"""Padding-aware reductions over time shared by every linear-time mixer.

SpeechBrain's convention is followed throughout: a padding mask is a boolean
tensor ``[batch, time]`` that is **True at padded frames**.

The masked mean implements

.. math::

    \\bar{h} = \\frac{\\sum_t m_t \\, h_t}{\\sum_t m_t}, \\qquad m_t = 1 - \\mathrm{pad}_t

and its causal counterpart (a running mean, used for streaming)

.. math::

    \\bar{h}_t = \\frac{\\sum_{\\tau \\le t} m_\\tau h_\\tau}{\\sum_{\\tau \\le t} m_\\tau}.

With dynamic chunks (chunk size ``c``, ``L`` chunks of left context), frame
``t`` of chunk ``j = t // c`` reads the mean over frames
``[max(0, (j - L) c), (j + 1) c)``, which is what a streaming model that
processes one chunk at a time can compute (:func:`chunked_mean`).

Padded frames are removed with ``torch.where`` rather than a product, so a
non-finite value in a padded frame can never reach a valid frame.

Example
-------
>>> import torch
>>> h = torch.tensor([[[1.0], [3.0], [100.0]]])
>>> pad = torch.tensor([[False, False, True]])
>>> masked_mean(h, pad)
tensor([[[2.]]])
>>> masked_mean(h, pad, causal=True)[0, :, 0]
tensor([1., 2., 2.])
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
    acc_dtype = _accumulation_dtype(h)
    if padding_mask is None:
        return h.to(acc_dtype).mean(dim=1, keepdim=True).to(h.dtype)

    if padding_mask.shape != h.shape[:2]:
        raise ValueError(
            f"padding_mask has shape {tuple(padding_mask.shape)} but the input is "
            f"{tuple(h.shape)}: expected [batch, time] = {tuple(h.shape[:2])}"
        )
    h_valid, counts = _valid_only(h, padding_mask, acc_dtype)
    total = h_valid.sum(dim=1, keepdim=True)
    counts = counts.sum(dim=1, keepdim=True).clamp(min=1.0).unsqueeze(-1)
    return (total / counts).to(h.dtype)


def _accumulation_dtype(h):
    return torch.float32 if h.dtype in (torch.float16, torch.bfloat16) else h.dtype


def _valid_only(h, padding_mask, acc_dtype):
    """``h`` with padded frames set to 0 (by selection), and the valid-frame indicator."""
    if padding_mask is None:
        return h.to(acc_dtype), torch.ones(h.shape[:2], dtype=acc_dtype, device=h.device)
    if padding_mask.shape != h.shape[:2]:
        raise ValueError(
            f"padding_mask has shape {tuple(padding_mask.shape)} but the input is "
            f"{tuple(h.shape)}: expected [batch, time] = {tuple(h.shape[:2])}"
        )
    valid = ~padding_mask.to(device=h.device, dtype=torch.bool)
    h_valid = torch.where(valid.unsqueeze(-1), h.to(acc_dtype), torch.zeros((), dtype=acc_dtype, device=h.device))
    return h_valid, valid.to(acc_dtype)


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
    acc_dtype = _accumulation_dtype(h)
    b, t, _ = h.shape
    h_valid, counts = _valid_only(h, padding_mask, acc_dtype)
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
