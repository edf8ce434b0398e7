"""SummaryMixing (Parcollet et al., arXiv 2307.07421), a linear-time token mixer.

Each frame keeps a local view ``f(x_t)`` and reads one summary of the whole
utterance, the mean of ``s(x_t)`` over valid frames:

.. math::

    \\bar{s} &= \\frac{\\sum_t m_t \\, s(x_t)}{\\sum_t m_t} \\\\
    y_t &= c\\big(\\mathrm{dropout}([\\, f(x_t) \\;;\\; \\bar{s} \\,])\\big)

where ``f``, ``s`` and ``c`` are ``Linear + activation`` blocks and ``[;]`` is a
concatenation (not a sum). Modes:

* ``full``: as above;
* ``lite``: ``y_t = c(\\bar{s})``, the summary alone;
* ``fast``: ``f`` and ``s`` are the two halves of one shared projection
  ``Linear(d, local_dim + summary_dim)``.

``groups > 1`` makes every linear layer grouped (block-diagonal), which the
original code calls "heads". This is an independent implementation: the
official code is CC-BY-NC. Padded frames never enter the summary, masks are
built on the input's device.

Example
-------
>>> import torch
>>> mixer = SummaryMixing(d_model=16, local_dim=8, summary_dim=12)
>>> x = torch.randn(2, 9, 16)
>>> mixer(x).shape
torch.Size([2, 9, 16])
>>> SummaryMixing(16, 8, 12, mode="fast", groups=4)(x).shape
torch.Size([2, 9, 16])
"""

import math

import torch
import torch.nn as nn

from pom.mixers.masking import chunked_mean, masked_mean


class GroupedLinear(nn.Module):
    """Block-diagonal linear layer: ``y = [W_1 x^{(1)} | ... | W_G x^{(G)}] + b``.

    Arguments
    ---------
    in_features : int
        Input size (divisible by ``groups``).
    out_features : int
        Output size (divisible by ``groups``).
    groups : int
        Number of diagonal blocks; 1 is an ordinary ``nn.Linear``.
    bias : bool
        Whether to add a bias.

    Example
    -------
    >>> GroupedLinear(8, 6, groups=2)(torch.randn(3, 5, 8)).shape
    torch.Size([3, 5, 6])
    """

    def __init__(self, in_features, out_features, groups=1, bias=True):
        super().__init__()
        if in_features % groups or out_features % groups:
            raise ValueError(
                f"GroupedLinear: in_features ({in_features}) and out_features ({out_features}) "
                f"must be divisible by groups ({groups})"
            )
        self.groups = groups
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features // groups)
        self.weight = nn.Parameter(torch.empty(groups, in_features // groups, out_features // groups).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound)) if bias else None

    def forward(self, x):
        """Applies the grouped projection on the last dimension."""
        xg = x.reshape(*x.shape[:-1], self.groups, self.in_features // self.groups)
        y = torch.einsum("...gi,gio->...go", xg, self.weight.to(x.dtype)).reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias.to(y.dtype)


def _dense(in_features, out_features, groups, activation):
    linear = nn.Linear(in_features, out_features) if groups == 1 else GroupedLinear(in_features, out_features, groups)
    return nn.Sequential(linear, activation())


class SummaryMixing(nn.Module):
    """SummaryMixing token mixer.

    Arguments
    ---------
    d_model : int
        Input and output feature size.
    local_dim : int
        Width of the local branch ``f`` (official Conformer default: 512).
    summary_dim : int
        Width of the summary branch ``s`` (official Conformer default: 1024).
    mode : str
        ``"full"``, ``"lite"`` or ``"fast"``.
    groups : int
        Grouped ("multi-head") linear layers when > 1.
    activation : type
        Activation class for ``f``, ``s`` and ``c`` (the Conformer's, GELU here).
    dropout : float
        Dropout on the concatenation before ``c``.
    causal : bool
        If True, frame ``t`` reads the running summary over frames ``<= t``.
    """

    MODES = ("full", "lite", "fast")

    def __init__(
        self,
        d_model,
        local_dim=512,
        summary_dim=1024,
        mode="full",
        groups=1,
        activation=nn.GELU,
        dropout=0.1,
        causal=False,
    ):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"SummaryMixing: unknown mode '{mode}', expected one of {self.MODES}")
        self.d_model, self.local_dim, self.summary_dim = d_model, local_dim, summary_dim
        self.mode, self.groups, self.causal = mode, groups, causal
        if mode == "fast":
            self.shared_proj = _dense(d_model, local_dim + summary_dim, groups, activation)
        else:
            self.summary_proj = _dense(d_model, summary_dim, groups, activation)
            if mode == "full":
                self.local_proj = _dense(d_model, local_dim, groups, activation)
        combined = summary_dim if mode == "lite" else local_dim + summary_dim
        self.combine_proj = _dense(combined, d_model, groups, activation)
        self.dropout = nn.Dropout(dropout)

    #: Reads SpeechBrain dynamic-chunk configurations and streams chunk by chunk.
    supports_dynamic_chunks = True

    def _branches(self, x):
        if self.mode == "fast":
            return self.shared_proj(x).split([self.local_dim, self.summary_dim], dim=-1)
        return (self.local_proj(x) if self.mode == "full" else None), self.summary_proj(x)

    def _combine(self, x, local, summary):
        if local is None:
            combined = summary.expand(x.shape[0], x.shape[1], -1)
        else:
            combined = torch.cat([local, summary.expand(-1, x.shape[1], -1)], dim=-1)
        return self.combine_proj(self.dropout(combined))

    def forward(self, x, padding_mask=None, dynchunktrain_config=None):
        """Mixes ``x`` ``[B, T, d_model]``; ``padding_mask`` ``[B, T]`` is True at padded frames.
        A SpeechBrain ``DynChunkTrainConfig`` restricts each frame's summary to
        the frames up to the end of its chunk (within the left context)."""
        local, summary = self._branches(x)
        if dynchunktrain_config is not None:
            if self.causal:
                raise ValueError("SummaryMixing: causal=True and dynamic chunks are exclusive")
            summary, _ = chunked_mean(
                summary, padding_mask, dynchunktrain_config.chunk_size, dynchunktrain_config.left_context_size
            )
        else:
            summary = masked_mean(summary, padding_mask, causal=self.causal)
        return self._combine(x, local, summary)

    def forward_streaming(self, x, state=None, padding_mask=None):
        """Next chunk ``x`` with the running summary ``state`` (None at the start);
        returns ``(y, state)``. Same semantics as :meth:`PolynomialMixer.forward_streaming`."""
        local, summary = self._branches(x)
        summary, state = chunked_mean(summary, padding_mask, chunk_size=1 if self.causal else x.shape[1], state=state)
        return self._combine(x, local, summary), state

    def extra_repr(self):
        return f"d_model={self.d_model}, local_dim={self.local_dim}, summary_dim={self.summary_dim}, mode={self.mode}, groups={self.groups}"
