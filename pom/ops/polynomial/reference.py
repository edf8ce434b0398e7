"""PoM's mixing in plain PyTorch: the reference every faster op is checked against.

With ``P`` and ``s`` the terms and gate of a form (:mod:`pom.ops.polynomial.forms`)
and ``V`` the valid frames, the mixing (everything of a PoM layer but its
output LayerNorm) is

.. math::

    H = \\frac{1}{|V|} \\sum_{t \\in V} P(x_t), \\qquad
    z_t = W_o \\, \\mathrm{dropout}\\big(s(x_t) \\odot H\\big) + b_o

(``causal=True``: ``H_t`` is the running mean over valid frames ``<= t``).
Every implementation of it has this module's signature::

    polynomial_mixing(x, form, params, out_weight, out_bias, padding_mask=None,
                      causal=False, dropout_p=0.0) -> z     # x, z: [B, T, d]

(``form`` a form object, ``params`` the tuple of tensors it reads,
``padding_mask`` ``[B, T]`` True at padded frames); the chunked and fused ops
add one keyword-only tuning option, ``chunk_size``.

The global state ``H`` is kept in float32 under autocast (a sum of float32 or
float32-accumulated terms) and read out by :func:`pom.ops.polynomial.readout.readout`:
folded into ``W_o`` on inputs longer than ``d`` frames, as written otherwise.

:func:`streaming_polynomial_mixing` is the same mixing when frames arrive in
chunks (dynamic chunk training and streaming): frame ``t`` reads the mean of
``P`` up to the end of its chunk. :func:`product_state` is the product form's
state from its branch projection, the twin of the fused kernel.

Example
-------
>>> import torch
>>> from pom.ops.polynomial.forms import ProductForm
>>> _ = torch.manual_seed(0)
>>> x = torch.randn(2, 5, 4)
>>> w, s, o = torch.randn(8, 4), torch.randn(8, 4), torch.randn(4, 8)
>>> z = polynomial_mixing(x, ProductForm(2), (w, None, s, None), o, None)
>>> g = torch.nn.functional.gelu(x @ w.T)
>>> h = torch.cat([g[..., :4], g[..., :4] * g[..., 4:]], dim=-1).mean(dim=1, keepdim=True)
>>> torch.allclose(z, (torch.sigmoid(x @ s.T) * h) @ o.T, atol=1e-6)
True
"""

from pom.ops.masking import chunked_mean, masked_mean, masked_sum, valid_frame_counts, valid_frames
from pom.ops.polynomial.forms import ProductForm
from pom.ops.polynomial.readout import gated_readout, readout

#: The forms this op computes (see :func:`supports`).
SUPPORTED_FORMS = "every form"


def supports(form):
    """Whether this op computes ``form``: every form of :mod:`pom.ops.polynomial.forms`."""
    return True


def utterance_state(terms, padding_mask=None):
    """``H = (1/|V|) sum_{t in V} P(x_t)``, ``[B, 1, S]``, float32 for half-precision ``terms``."""
    valid = valid_frames(padding_mask, terms.shape, terms.device)
    total = masked_sum(terms, valid)
    return total / valid_frame_counts(valid, terms.shape[0], terms.shape[1], total.dtype, total.device)


def polynomial_mixing(x, form, params, out_weight, out_bias=None, padding_mask=None, causal=False, dropout_p=0.0):
    """PoM's mixing ``z`` (before the output LayerNorm), plain PyTorch.

    Arguments
    ---------
    x : torch.Tensor
        ``[B, T, d]``.
    form : ProductForm, PowerSeriesForm or TopOrderForm
        The per-frame expansion (see :mod:`pom.ops.polynomial.forms`).
    params : tuple of torch.Tensor
        The tensors ``form`` reads, in its documented order.
    out_weight, out_bias : torch.Tensor
        ``W_o [d, state_dim]`` and ``b_o [d]`` (or None).
    padding_mask : torch.Tensor, optional
        ``[B, T]`` boolean, True at padded frames.
    causal : bool
        Running mean over frames ``<= t`` instead of the global mean.
    dropout_p : float
        Dropout on the gated state (pass 0 outside training).

    Returns
    -------
    torch.Tensor
        ``[B, T, d]``.
    """
    terms, gate = form.terms_and_gate(x, params)
    if causal:
        return gated_readout(gate, masked_mean(terms, padding_mask, causal=True), out_weight, out_bias, dropout_p)
    return readout(gate, utterance_state(terms, padding_mask), out_weight, out_bias, dropout_p)


def streaming_polynomial_mixing(
    x, form, params, out_weight, out_bias=None, padding_mask=None, chunk_size=1, left_context_chunks=None, state=None,
    dropout_p=0.0,
):  # fmt: skip
    """PoM's mixing when frames arrive in chunks; returns ``(z, state)``.

    Frame ``t`` of chunk ``t // chunk_size`` reads the mean of ``P`` over the
    valid frames up to the end of its chunk, within ``left_context_chunks``
    chunks (all when None), plus the frames summarised by ``state``, the
    running ``(sum, count)`` returned by the previous call (None at the start),
    so that ``H = (n_past H_past + n_cur H_cur) / (n_past + n_cur)``.
    ``chunk_size=1`` is the causal running mean. Other arguments as
    :func:`polynomial_mixing`.
    """
    terms, gate = form.terms_and_gate(x, params)
    means, state = chunked_mean(terms, padding_mask, chunk_size, left_context_chunks, state)
    return gated_readout(gate, means, out_weight, out_bias, dropout_p), state


def product_state(projection, weights, degree):
    """The product form's state ``H[b] = sum_t w_bt P(a_bt)``, ``[B, k W]`` float32,
    from the branch projection ``a = W x + b`` ``[B, T, k W]`` and the frame
    weights ``w [B, T]`` (:func:`pom.ops.masking.frame_weights`); frames of
    weight 0 never count, whatever they hold. The fused op's twin."""
    terms = ProductForm(degree).activate(projection.float())
    valid = (weights > 0).unsqueeze(-1)
    return (terms.masked_fill(~valid, 0.0) * weights.unsqueeze(-1)).sum(dim=1)
