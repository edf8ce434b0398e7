"""Multi-head self-attention baselines behind the common mixer interface.

All three compute scaled dot-product attention over valid frames,

.. math::

    y_t = W_o \\, \\big\\Vert_{h} \\sum_{j \\in V} \\mathrm{softmax}_j\\!\\Big(
        \\frac{q^h_t \\cdot k^h_j + r^h_{t-j}}{\\sqrt{d_h}}\\Big) v^h_j ,

which costs ``O(T^2)`` time and memory.

* :class:`RelPosMHAXLMixer` wraps SpeechBrain's ``RelPosMHAXL`` (Transformer-XL
  relative positions ``r_{t-j}``, the baseline of the PoM and BEST-RQ papers).
  Its weights live in ``.attention`` with SpeechBrain's parameter names.
* :class:`RoPEMHAMixer` wraps SpeechBrain's ``RoPEMHA`` (rotary positions:
  no ``r``, but ``q_t`` and ``k_j`` rotated by angles proportional to ``t``
  and ``j``, so ``q_t \\cdot k_j`` depends on ``t - j``; fused
  ``scaled_dot_product_attention``). Its weights live in ``.attention``.
* :class:`MultiHeadAttentionMixer` is plain MHA (no ``r``) through PyTorch's
  fused ``scaled_dot_product_attention`` (FlashAttention / memory-efficient
  kernels on GPU). Use absolute positions in the encoder with it.

Padded keys are excluded; outputs at padded queries are computed but never
read by valid frames.

Example
-------
>>> import torch
>>> x = torch.randn(2, 6, 16)
>>> pad = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
>>> RelPosMHAXLMixer(16, nhead=4)(x, pad).shape
torch.Size([2, 6, 16])
>>> RoPEMHAMixer(16, nhead=4)(x, pad).shape
torch.Size([2, 6, 16])
>>> MultiHeadAttentionMixer(16, nhead=4)(x, pad).shape
torch.Size([2, 6, 16])
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from speechbrain.nnet.attention import RelPosEncXL, RelPosMHAXL, RoPEMHA

from pom.mixers.base import TokenMixer


def relative_position_encoder(d_model):
    """SpeechBrain's ``RelPosEncXL`` with its constant frequency table kept out
    of the state dict (it is derived from ``d_model``, nothing to learn or save).

    Example
    -------
    >>> relative_position_encoder(8)(torch.zeros(1, 5, 8)).shape
    torch.Size([1, 9, 8])
    """
    encoder = RelPosEncXL(d_model)
    inv_freq = encoder.inv_freq
    del encoder._buffers["inv_freq"]
    encoder.register_buffer("inv_freq", inv_freq, persistent=False)
    return encoder


class RelPosMHAXLMixer(TokenMixer):
    """SpeechBrain's ``RelPosMHAXL`` as a token mixer.

    Arguments
    ---------
    d_model : int
        Feature size.
    nhead : int
        Number of heads.
    dropout : float
        Attention dropout.
    causal : bool
        Mask future positions.
    """

    #: The encoder computes relative position embeddings once and passes them.
    needs_pos_embs = True
    #: Restrictions (causal, dynamic chunks) come as an attention mask.
    accepts_attn_mask = True

    def __init__(self, d_model, nhead=8, dropout=0.0, causal=False):
        super().__init__()
        self.d_model, self.nhead, self.causal = d_model, nhead, causal
        self.attention = RelPosMHAXL(embed_dim=d_model, num_heads=nhead, dropout=dropout, mask_pos_future=causal)
        self.pos_encoder = relative_position_encoder(d_model)

    def forward(self, x, padding_mask=None, pos_embs=None, attn_mask=None):
        """Attention over ``x`` ``[B, T, d]``; ``pos_embs`` ``[1, 2T-1, d]`` is built if not given."""
        if pos_embs is None:
            pos_embs = self.pos_encoder(x)
        pos_embs = pos_embs.to(x.dtype)
        if self.causal and attn_mask is None:
            t = x.shape[1]
            attn_mask = torch.triu(torch.ones(t, t, dtype=torch.bool, device=x.device), diagonal=1)
        return self.attention(
            x, x, x, pos_embs=pos_embs, key_padding_mask=padding_mask, attn_mask=attn_mask, return_attn_weights=False
        )


class RoPEMHAMixer(TokenMixer):
    """SpeechBrain's ``RoPEMHA`` (rotary position embeddings, Su et al. 2021) as a token mixer.

    With ``R_t`` the block-diagonal rotation by angles ``t \\theta_i``,
    ``\\theta_i = 10000^{-2i/d_h}``, each head computes

    .. math::

        y_t = \\sum_{j \\in V} \\mathrm{softmax}_j\\Big(\\frac{(R_t q_t) \\cdot (R_j k_j)}{\\sqrt{d}}\\Big) v_j,
        \\qquad (R_t q_t) \\cdot (R_j k_j) = q_t \\cdot R_{j - t} k_j ,

    so the scores depend on relative positions only (SpeechBrain scales by
    ``1/sqrt(d_model)``, not ``1/sqrt(d_h)``; the q/k/v projection has no bias).
    Positions count from the first frame of each utterance, so padding at the
    end changes nothing for valid frames.

    Arguments
    ---------
    d_model : int
        Feature size (divisible by ``nhead``, with an even head size).
    nhead : int
        Number of heads.
    dropout : float
        Attention dropout (training only).
    causal : bool
        Mask future positions.

    Example
    -------
    >>> mixer = RoPEMHAMixer(16, nhead=2, causal=True)
    >>> x = torch.randn(1, 5, 16)
    >>> y = x.clone()
    >>> y[:, 3:] += 1.0
    >>> torch.allclose(mixer(x)[:, :3], mixer(y)[:, :3], atol=1e-6)
    True
    """

    #: Restrictions (causal, dynamic chunks) come as an attention mask.
    accepts_attn_mask = True

    def __init__(self, d_model, nhead=8, dropout=0.0, causal=False):
        super().__init__()
        if d_model % nhead or (d_model // nhead) % 2:
            raise ValueError(
                f"RoPEMHAMixer: d_model ({d_model}) must be divisible by nhead ({nhead}) into an even head size"
            )
        self.d_model, self.nhead, self.causal = d_model, nhead, causal
        self.attention = RoPEMHA(embed_dim=d_model, num_heads=nhead, dropout=dropout)

    def forward(self, x, padding_mask=None, attn_mask=None):
        """Attention over ``x`` ``[B, T, d]``; ``attn_mask`` ``[T, T]`` (True = blocked) is optional."""
        t = x.shape[1]
        if padding_mask is not None:
            padding_mask = padding_mask.to(device=x.device, dtype=torch.bool)
            x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)  # even non-finite padding cannot reach a value
        if attn_mask is not None:
            attn_mask = attn_mask.to(device=x.device, dtype=torch.bool)
        if self.causal:
            future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(diagonal=1)
            attn_mask = future if attn_mask is None else attn_mask | future
        return self.attention(x, x, x, key_padding_mask=padding_mask, attn_mask=attn_mask, return_attn_weights=False)


class MultiHeadAttentionMixer(TokenMixer):
    """Plain multi-head self-attention through ``F.scaled_dot_product_attention``.

    Arguments
    ---------
    d_model : int
        Feature size (divisible by ``nhead``).
    nhead : int
        Number of heads.
    dropout : float
        Attention dropout (training only).
    causal : bool
        Mask future positions.
    bias : bool
        Biases in the projections.
    """

    #: Restrictions (causal, dynamic chunks) come as an attention mask.
    accepts_attn_mask = True

    def __init__(self, d_model, nhead=8, dropout=0.0, causal=False, bias=True):
        super().__init__()
        if d_model % nhead:
            raise ValueError(f"MultiHeadAttentionMixer: d_model ({d_model}) must be divisible by nhead ({nhead})")
        self.d_model, self.nhead, self.causal, self.dropout = d_model, nhead, causal, dropout
        self.qkv_proj = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, x, padding_mask=None, attn_mask=None):
        """Attention over ``x`` ``[B, T, d]``; ``attn_mask`` (True = blocked) is optional."""
        b, t, _ = x.shape
        q, k, v = self.qkv_proj(x).view(b, t, 3, self.nhead, -1).permute(2, 0, 3, 1, 4)
        allowed = None
        if padding_mask is not None:
            allowed = ~padding_mask.to(device=x.device, dtype=torch.bool).view(b, 1, 1, t)
        if attn_mask is not None:
            extra = ~attn_mask.to(device=x.device, dtype=torch.bool)
            allowed = extra if allowed is None else allowed & extra
        if self.causal:
            causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
            allowed = causal if allowed is None else allowed & causal
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out_proj(out.transpose(1, 2).reshape(b, t, self.d_model))
