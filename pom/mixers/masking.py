"""Padding-aware reductions over time shared by every linear-time mixer.

SpeechBrain's convention is followed throughout: a padding mask is a boolean
tensor ``[batch, time]`` that is **True at padded frames**.

The masked mean implements

.. math::

    \\bar{h} = \\frac{\\sum_t m_t \\, h_t}{\\sum_t m_t}, \\qquad m_t = 1 - \\mathrm{pad}_t

and its causal counterpart (a running mean, used for streaming)

.. math::

    \\bar{h}_t = \\frac{\\sum_{\\tau \\le t} m_\\tau h_\\tau}{\\sum_{\\tau \\le t} m_\\tau}.

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
    acc_dtype = torch.float32 if h.dtype in (torch.float16, torch.bfloat16) else h.dtype
    if padding_mask is None:
        if causal:
            counts = torch.arange(1, h.shape[1] + 1, device=h.device, dtype=acc_dtype)
            out = torch.cumsum(h.to(acc_dtype), dim=1) / counts.view(1, -1, 1)
        else:
            out = h.to(acc_dtype).mean(dim=1, keepdim=True)
        return out.to(h.dtype)

    if padding_mask.shape != h.shape[:2]:
        raise ValueError(
            f"padding_mask has shape {tuple(padding_mask.shape)} but the input is "
            f"{tuple(h.shape)}: expected [batch, time] = {tuple(h.shape[:2])}"
        )
    valid = ~padding_mask.to(device=h.device, dtype=torch.bool)
    h_valid = torch.where(valid.unsqueeze(-1), h, torch.zeros((), dtype=h.dtype, device=h.device))
    counts = valid.to(acc_dtype)
    if causal:
        total = torch.cumsum(h_valid.to(acc_dtype), dim=1)
        counts = torch.cumsum(counts, dim=1).clamp(min=1.0).unsqueeze(-1)
    else:
        total = h_valid.to(acc_dtype).sum(dim=1, keepdim=True)
        counts = counts.sum(dim=1, keepdim=True).clamp(min=1.0).unsqueeze(-1)
    return (total / counts).to(h.dtype)
