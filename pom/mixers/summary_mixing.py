"""SummaryMixing (Parcollet et al., arXiv 2307.07421), a linear-time token mixer,
with the structure and defaults of the official Conformer SummaryMixing
(SamsungLabs/SummaryMixing, ``nnet/summary_mixing.py`` and its Conformer layer).

Each frame keeps a local view ``f(x_t)`` and reads one summary of the whole
utterance, the mean of ``s(x_t)`` over the valid frames (``m_t = 1`` at valid
frames, 0 at padded ones):

.. math::

    \\bar{s} &= \\frac{\\sum_t m_t \\, s(x_t)}{\\sum_t m_t} \\\\
    y_t &= c\\big(\\mathrm{dropout}([\\, f(x_t) \\;;\\; \\bar{s} \\,])\\big)

``[;]`` is a concatenation (not a sum) and

* ``f`` (local branch) is ``len(local_proj_hid_dim) + 1`` blocks
  ``Linear + activation``: ``d_model -> local_proj_hid_dim... -> local_proj_out_dim``;
* ``s`` (summary branch) likewise: ``d_model -> summary_hid_dim... -> d_model``;
* both branches are grouped with ``nhead`` groups (the official "heads",
  ``n_split = nhead``): every linear layer is block-diagonal, so the
  channels of group ``g`` only ever meet channels of group ``g``;
* ``c`` (merge) is one dense block ``Linear(local_proj_out_dim + d_model, d_model)
  + activation``.

Modes:

* ``full`` (official ``SummaryMixing``): as above;
* ``lite`` (``SummaryMixing-lite``): ``y_t = \\bar{s}``, the summary itself,
  broadcast to every frame; no local branch, no merge, no dropout;
* ``fast`` (``SummaryMixing-fast``): one shared dense block
  ``Linear(d_model, 2 local_proj_out_dim) + activation`` whose first half is
  ``f(x_t)`` and second half ``s(x_t)`` (the hidden sizes are not used), then
  the merge ``c`` from ``2 local_proj_out_dim`` to ``d_model``.

Biases start at zero, as in the official code. Beyond the official code:
padded frames never enter the summary (they are removed by selection, so even
non-finite padding cannot leak) and no mask is built on another device than
the input's; ``causal=True`` reads the running mean
``\\bar{s}_t = \\sum_{\\tau \\le t} m_\\tau s(x_\\tau) / \\sum_{\\tau \\le t} m_\\tau``;
a SpeechBrain ``DynChunkTrainConfig`` restricts the mean to the frames up to
the end of the frame's chunk (within the left context), and
:meth:`SummaryMixing.forward_streaming` carries the running sum and count
between chunks. This is an independent implementation (the official code is
CC-BY-NC).

Example
-------
>>> import torch
>>> mixer = SummaryMixing(d_model=16, nhead=4, local_proj_hid_dim=[8], local_proj_out_dim=8, summary_hid_dim=[12])
>>> x = torch.randn(2, 9, 16)
>>> mixer(x).shape
torch.Size([2, 9, 16])
>>> lite = SummaryMixing(16, nhead=4, summary_hid_dim=[12], mode="lite")
>>> y = lite(x)
>>> torch.equal(y, y[:, :1].expand_as(y))
True
>>> SummaryMixing(16, nhead=4, local_proj_out_dim=8, mode="fast")(x).shape
torch.Size([2, 9, 16])
"""

import math

import torch
import torch.nn as nn

from pom.mixers.base import TokenMixer
from pom.ops.masking import chunked_mean, masked_mean


class GroupedLinear(nn.Module):
    """Block-diagonal linear layer: ``y = [W_1 x^{(1)} | ... | W_G x^{(G)}] + b``,
    where ``x^{(g)}`` is the ``g``-th of ``G`` equal slices of the last dimension.

    Each block is initialised as an ``nn.Linear`` of its own size would be;
    the bias starts at zero.

    Arguments
    ---------
    in_features : int
        Input size (divisible by ``groups``).
    out_features : int
        Output size (divisible by ``groups``).
    groups : int
        Number of diagonal blocks.
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
        self.weight = nn.Parameter(
            torch.empty(groups, in_features // groups, out_features // groups).uniform_(-bound, bound)
        )
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x):
        """Applies the grouped projection on the last dimension."""
        x_groups = x.reshape(*x.shape[:-1], self.groups, self.in_features // self.groups)
        y = torch.einsum("...gi,gio->...go", x_groups, self.weight.to(x.dtype)).reshape(
            *x.shape[:-1], self.out_features
        )
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, groups={self.groups}"


def linear_activation_blocks(widths, groups, activation):
    """``Linear + activation`` blocks through ``widths = [in, hidden..., out]``,
    grouped (block-diagonal) when ``groups > 1``, with zero biases."""
    blocks = []
    for in_features, out_features in zip(widths[:-1], widths[1:]):
        if groups == 1:
            linear = nn.Linear(in_features, out_features)
            nn.init.zeros_(linear.bias)
        else:
            linear = GroupedLinear(in_features, out_features, groups)
        blocks += [linear, activation()]
    return nn.Sequential(*blocks)


def _hidden_widths(value, name):
    if isinstance(value, (int, str)) or not all(isinstance(w, int) and w > 0 for w in value):
        raise TypeError(f"SummaryMixing: {name} must be a list of hidden widths, e.g. [512]; got {value!r}")
    return list(value)


class SummaryMixing(TokenMixer):
    """SummaryMixing token mixer (official Conformer structure; see the module docstring).

    Arguments
    ---------
    d_model : int
        Input and output feature size (the summary branch's output size too).
    nhead : int
        Groups ("heads") of the block-diagonal local and summary branches;
        ``d_model`` and every branch width must be divisible by it.
    local_proj_hid_dim : list of int
        Hidden widths of the local branch ``f`` (official default ``[512]``).
    local_proj_out_dim : int
        Output width of the local branch ``f`` (official default 512).
    summary_hid_dim : list of int
        Hidden widths of the summary branch ``s`` (official Conformer default ``[1024]``).
    mode : str
        ``"full"``, ``"lite"`` or ``"fast"`` (the official names
        ``"SummaryMixing"``, ``"SummaryMixing-lite"``, ``"SummaryMixing-fast"`` are accepted).
    activation : type
        Activation class of every block (the Conformer's; GELU in the recipes).
    dropout : float
        Dropout on the concatenation ``[f(x_t) ; s_bar]`` before the merge.
    causal : bool
        If True, frame ``t`` reads the running summary over frames ``<= t``.
    """

    MODES = ("full", "lite", "fast")
    OFFICIAL_MODE_NAMES = {"SummaryMixing": "full", "SummaryMixing-lite": "lite", "SummaryMixing-fast": "fast"}

    supports_dynamic_chunks = True
    supports_streaming = True

    def __init__(
        self,
        d_model,
        nhead=8,
        local_proj_hid_dim=(512,),
        local_proj_out_dim=512,
        summary_hid_dim=(1024,),
        mode="full",
        activation=nn.GELU,
        dropout=0.1,
        causal=False,
    ):
        super().__init__()
        mode = self.OFFICIAL_MODE_NAMES.get(mode, mode)
        if mode not in self.MODES:
            raise ValueError(
                f"SummaryMixing: unknown mode '{mode}', expected one of {self.MODES} "
                f"(or {tuple(self.OFFICIAL_MODE_NAMES)})"
            )
        local_proj_hid_dim = _hidden_widths(local_proj_hid_dim, "local_proj_hid_dim")
        summary_hid_dim = _hidden_widths(summary_hid_dim, "summary_hid_dim")
        grouped = {} if mode == "fast" else {"d_model": d_model, "summary_hid_dim": summary_hid_dim}
        if mode == "full":
            grouped.update(local_proj_hid_dim=local_proj_hid_dim, local_proj_out_dim=local_proj_out_dim)
        for name, widths in grouped.items():
            if any(w % nhead for w in (widths if isinstance(widths, list) else [widths])):
                raise ValueError(f"SummaryMixing: {name} ({widths}) must be divisible by nhead ({nhead})")

        self.d_model, self.nhead, self.mode, self.causal = d_model, nhead, mode, causal
        self.local_proj_hid_dim, self.local_proj_out_dim = local_proj_hid_dim, local_proj_out_dim
        self.summary_hid_dim = summary_hid_dim
        if mode == "fast":
            self.shared_proj = linear_activation_blocks([d_model, 2 * local_proj_out_dim], 1, activation)
            self.merge_proj = linear_activation_blocks([2 * local_proj_out_dim, d_model], 1, activation)
        else:
            self.summary_proj = linear_activation_blocks([d_model, *summary_hid_dim, d_model], nhead, activation)
            if mode == "full":
                self.local_proj = linear_activation_blocks(
                    [d_model, *local_proj_hid_dim, local_proj_out_dim], nhead, activation
                )
                self.merge_proj = linear_activation_blocks([local_proj_out_dim + d_model, d_model], 1, activation)
        self.dropout = nn.Dropout(dropout)

    def _branches(self, x):
        """``(f(x), s(x))``; ``f`` is None in lite mode."""
        if self.mode == "fast":
            return self.shared_proj(x).chunk(2, dim=-1)
        return (self.local_proj(x) if self.mode == "full" else None), self.summary_proj(x)

    def _merge(self, local, summary, num_frames):
        """``c(dropout([f ; s_bar]))``, or ``s_bar`` broadcast to every frame in lite mode."""
        summary = summary.expand(-1, num_frames, -1)
        if local is None:
            return summary
        return self.merge_proj(self.dropout(torch.cat([local, summary], dim=-1)))

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
        return self._merge(local, summary, x.shape[1])

    def forward_streaming(self, x, state=None, padding_mask=None):
        """Next chunk ``x`` with the running summary ``state`` (None at the start);
        returns ``(y, state)``. Same semantics as :meth:`PolynomialMixer.forward_streaming`."""
        local, summary = self._branches(x)
        summary, state = chunked_mean(summary, padding_mask, chunk_size=1 if self.causal else x.shape[1], state=state)
        return self._merge(local, summary, x.shape[1]), state

    def extra_repr(self):
        return (
            f"d_model={self.d_model}, nhead={self.nhead}, mode={self.mode}, "
            f"local_proj_hid_dim={self.local_proj_hid_dim}, local_proj_out_dim={self.local_proj_out_dim}, "
            f"summary_hid_dim={self.summary_hid_dim}, causal={self.causal}"
        )
