"""Fastformer (Wu et al., 2021): additive attention in linear time.

Per head, with ``q_t, k_t, v_t`` the projected frames and ``V`` the valid frames:

.. math::

    \\alpha_t &= \\mathrm{softmax}_{t \\in V}\\big(w_\\alpha^\\top q_t / \\sqrt{d_h}\\big), &
    g &= \\textstyle\\sum_{t \\in V} \\alpha_t q_t \\\\
    p_t &= g \\odot k_t, \\quad
    \\beta_t = \\mathrm{softmax}_{t \\in V}\\big(w_\\beta^\\top p_t / \\sqrt{d_h}\\big), &
    K &= \\textstyle\\sum_{t \\in V} \\beta_t p_t \\\\
    y_t &= W_r (K \\odot v_t) + q_t

Padded frames get zero weight and are removed before every sum.

Example
-------
>>> import torch
>>> Fastformer(16, nhead=4)(torch.randn(2, 5, 16)).shape
torch.Size([2, 5, 16])
"""

import math

import torch
import torch.nn as nn

from pom.mixers.base import TokenMixer


def _masked_softmax_pool(values, scores, valid):
    """``sum_t softmax_t(scores) values_t`` over valid frames; values ``[B,T,H,dh]``, scores ``[B,T,H]``."""
    if valid is not None:
        scores = scores.masked_fill(~valid.unsqueeze(-1), float("-inf"))
        values = torch.where(
            valid.view(*valid.shape, 1, 1), values, torch.zeros((), dtype=values.dtype, device=values.device)
        )
    weights = torch.softmax(scores.float(), dim=1).to(values.dtype)
    return torch.einsum("bth,bthd->bhd", weights, values)


class Fastformer(TokenMixer):
    """Fastformer additive-attention token mixer.

    Arguments
    ---------
    d_model : int
        Feature size (divisible by ``nhead``).
    nhead : int
        Number of heads.
    dropout : float
        Dropout on the output.
    causal : bool
        Not supported (the global query and key pool every frame); raises if True.
    """

    def __init__(self, d_model, nhead=8, dropout=0.0, causal=False):
        super().__init__()
        if causal:
            raise ValueError("Fastformer: causal=True is not supported (global additive attention pools every frame)")
        if d_model % nhead:
            raise ValueError(f"Fastformer: d_model ({d_model}) must be divisible by nhead ({nhead})")
        self.d_model, self.nhead, self.head_dim = d_model, nhead, d_model // nhead
        self.qkv_proj = nn.Linear(d_model, 3 * d_model)
        self.query_score = nn.Linear(self.head_dim, 1, bias=False)
        self.key_score = nn.Linear(self.head_dim, 1, bias=False)
        self.transform = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, padding_mask=None):
        """Mixes ``x`` ``[B, T, d]``; ``padding_mask`` ``[B, T]`` True at padded frames."""
        b, t, _ = x.shape
        q, k, v = self.qkv_proj(x).view(b, t, 3, self.nhead, self.head_dim).unbind(dim=2)
        valid = None if padding_mask is None else ~padding_mask.to(device=x.device, dtype=torch.bool)
        scale = 1.0 / math.sqrt(self.head_dim)
        global_query = _masked_softmax_pool(q, self.query_score(q).squeeze(-1) * scale, valid)
        p = global_query.unsqueeze(1) * k
        global_key = _masked_softmax_pool(p, self.key_score(p).squeeze(-1) * scale, valid)
        u = (global_key.unsqueeze(1) * v).reshape(b, t, self.d_model)
        return self.dropout(self.transform(u)) + q.reshape(b, t, self.d_model)
