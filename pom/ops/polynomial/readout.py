"""PoM's read-out ``z_t = W_o dropout(s_t * H) + b_o``, literal and with ``H`` folded into ``W_o``.

With one state ``H_b`` per utterance (the global mean), the gated product
never needs to exist:

.. math::

    z_t = W_o \\, (s_t \\odot H_b) + b_o = \\big(W_o \\, \\mathrm{diag}(H_b)\\big) \\, s_t + b_o

so :func:`folded_readout` scales ``W_o``'s columns by ``H_b`` (a ``[B, d,
state_dim]`` weight, one per utterance) and runs one batched matrix product on
the gate. :func:`gated_readout`, the literal form and its reference twin, writes
the gated tensor ``s * H`` (``[B, T, state_dim]``), keeps it for backward and
reads it again; the fold removes that tensor and its elementwise pass. Dropout
on ``s * H`` is dropout on ``s`` (the same mask scales the same products). The
fold pays when the utterances are longer than the model is wide (its weight,
``B d state_dim``, is then no larger than the gated tensor): :func:`readout`
folds when ``H`` is one state per utterance and ``T >= d``, and computes the
literal form otherwise (running or chunk-wise means, short inputs).

Precision (autocast or half-precision tensors): ``H`` arrives in float32 (a
sum over time of float32 terms); the folded weight ``W_o diag(H)`` is formed in
float32 and rounded once to the gate's dtype for the matrix product. In the
literal form, ``s * H`` is formed in float32; with a float16 gate the product
with ``W_o`` runs in float32 (``s * H`` may pass float16's range, 65504, where
``z`` does not) and ``z`` is rounded to float16 at the end. Outputs are in the
gate's dtype in both forms (the autocast dtype under autocast).

Example
-------
>>> import torch
>>> gate, state = torch.rand(2, 5, 8), torch.randn(2, 1, 8)
>>> w, b = torch.randn(3, 8), torch.randn(3)
>>> torch.allclose(folded_readout(gate, state, w, b), gated_readout(gate, state, w, b), atol=1e-5)
True
>>> folds(torch.zeros(2, 1, 8), time=5, out_weight=w), folds(torch.zeros(2, 5, 8), time=5, out_weight=w)
(True, False)
"""

import torch
import torch.nn.functional as F


def folds(state, time, out_weight):
    """Whether :func:`readout` folds ``state`` into ``W_o``: one state per
    utterance (``[B, 1, state_dim]``) and ``time >= d`` (``W_o`` is ``[d, state_dim]``)."""
    return state.dim() == 3 and state.shape[1] == 1 and time >= out_weight.shape[0]


def gated_readout(gate, state, out_weight, out_bias=None, dropout_p=0.0):
    """``W_o dropout(gate * state) + b_o`` as written; ``state`` ``[B, 1 or T, S]``
    broadcasts over time. The reference twin of :func:`folded_readout`."""
    gated = gate * state
    if dropout_p > 0:
        gated = F.dropout(gated, dropout_p)
    if gate.dtype == torch.float16 and gated.dtype == torch.float32:  # s * H may not fit float16
        with torch.autocast(gated.device.type, enabled=False):
            bias = None if out_bias is None else out_bias.float()
            return F.linear(gated, out_weight.float(), bias).to(gate.dtype)
    return F.linear(gated.to(gate.dtype), out_weight, out_bias)


def fold_weight(out_weight, state, dtype):
    """``W_o diag(H_b)`` for every utterance, ``[B, d, S]``, formed in float32
    (or float64) and rounded to ``dtype``; ``state`` is ``[B, 1, S]``."""
    wide = torch.promote_types(torch.promote_types(out_weight.dtype, state.dtype), torch.float32)
    return (out_weight.to(wide) * state.to(wide)).to(dtype)


def apply_folded(gate, weight, out_bias=None):
    """``z_t = weight_b s_t + b_o``: one batched product, ``gate`` ``[B, T, S]``,
    ``weight`` ``[B, d, S]`` from :func:`fold_weight`."""
    if out_bias is None:
        return torch.bmm(gate, weight.transpose(1, 2))
    return torch.baddbmm(out_bias.to(gate.dtype), gate, weight.transpose(1, 2))


def folded_readout(gate, state, out_weight, out_bias=None, dropout_p=0.0):
    """``(W_o diag(H_b)) dropout(s_t) + b_o`` = :func:`gated_readout` for one
    state per utterance (``state`` ``[B, 1, S]``), without the ``[B, T, S]``
    gated tensor."""
    if dropout_p > 0:
        gate = F.dropout(gate, dropout_p)
    return apply_folded(gate, fold_weight(out_weight, state, gate.dtype), out_bias)


def readout(gate, state, out_weight, out_bias=None, dropout_p=0.0):
    """``W_o dropout(gate * state) + b_o``, folded when :func:`folds` says so,
    else literal (same function, see the module docstring)."""
    if folds(state, gate.shape[1], out_weight):
        return folded_readout(gate, state, out_weight, out_bias, dropout_p)
    return gated_readout(gate, state, out_weight, out_bias, dropout_p)
