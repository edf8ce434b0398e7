"""Absolute sinusoidal positions computed for any length (no table, no maximum).

.. math::

    PE[t, 2i] = \\sin(t / 10000^{2i/d}), \\qquad PE[t, 2i+1] = \\cos(t / 10000^{2i/d})

the formula of SpeechBrain's ``PositionalEncoding``, without its fixed-size
buffer (which would limit inputs to ``max_len`` frames and be saved in every
checkpoint).

Example
-------
>>> sinusoidal_positions(3, 4)[0, 0]
tensor([0., 1., 0., 1.])
>>> import torch
>>> SinusoidalPositions(4)(torch.zeros(2, 3, 4)).shape
torch.Size([1, 3, 4])
"""

import math

import torch
import torch.nn as nn


def sinusoidal_positions(length, d_model, device=None, dtype=torch.float32, start=0):
    """Returns ``[1, length, d_model]`` absolute sinusoidal positions of frames
    ``start .. start + length - 1`` (``start`` > 0 when streaming)."""
    positions = torch.arange(start, start + length, device=device, dtype=torch.float32).unsqueeze(1)
    inv_freq = torch.exp(
        torch.arange(0, d_model, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d_model)
    )
    pe = torch.zeros(length, d_model, device=device, dtype=torch.float32)
    pe[:, 0::2] = torch.sin(positions * inv_freq)
    pe[:, 1::2] = torch.cos(positions * inv_freq)[:, : d_model // 2]
    return pe.unsqueeze(0).to(dtype)


class SinusoidalPositions(nn.Module):
    """Module form: ``forward(x [B, T, d]) -> [1, T, d]`` on ``x``'s device and dtype.

    Arguments
    ---------
    d_model : int
        Feature size.
    """

    def __init__(self, d_model):
        super().__init__()
        self.d_model = d_model

    def forward(self, x):
        """Positions for the length of ``x``."""
        return sinusoidal_positions(x.shape[1], self.d_model, device=x.device, dtype=x.dtype)
