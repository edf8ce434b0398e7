"""Memory-lean ("chunked") PoM mixing: the reference's function without ever
materialising the wide ``[B, T, state_dim]`` intermediates.

The reference writes, for every frame, the polynomial terms ``P(x_t)``, the
gate ``s(x_t)`` and the gated state ``s_t * H`` (all ``state_dim`` wide,
4-8x ``d``) and keeps them for the backward pass. Here the sequence is
processed in chunks of ``chunk_size`` frames:

* **forward**, pass 1: ``H = (1/|V|) sum_{t in V} P(x_t)`` accumulated chunk by
  chunk (:func:`~pom.ops.masking.masked_sum`, float32 for half precision);
  pass 2: ``z_t = W_o (s(x_t) * H) + b_o`` chunk by chunk, with ``H`` folded
  into ``W_o`` when the input is longer than ``d`` frames
  (:mod:`~pom.ops.polynomial.readout`: one ``[B, d, state_dim]`` weight, no
  gated tensor). Only ``x``, the valid frames and ``H`` (``[B, state_dim]``,
  float32 for half precision) are kept for backward.
* **backward** recomputes each chunk's intermediates instead of storing them:
  pass 1 (gate side) back-propagates ``dz`` through the read-out and the gate
  and accumulates ``dH = sum_t W_o^T dz_t * s_t`` (folded: ``dM = sum_t dz_t
  s_t^T``, then ``dH = sum_rows dM * W_o`` and ``dW_o = sum_b dM * H``, in
  float32); pass 2 (polynomial side) back-propagates ``dP_t = m_t dH / |V|``
  through the form.

Activation memory drops from ``O(T * state_dim)`` to ``O(T * d)`` plus one
chunk's working set, at the price of recomputing the expansion once in
backward (as activation checkpointing does). The recomputation runs under the
autocast state of the forward pass, so outputs and gradients match the
reference to rounding (the sums over time are only reassociated).

Same signature as :func:`pom.ops.polynomial.reference.polynomial_mixing`, plus
``chunk_size``; every form, any degree, with or without padding, autocast
included. Not supported (a clear error): ``causal=True`` and ``dropout_p > 0``
(a chunked dropout mask could not reproduce the reference's).

Example
-------
>>> import torch
>>> from pom.ops.polynomial import reference
>>> from pom.ops.polynomial.forms import ProductForm
>>> x = torch.randn(2, 11, 4)
>>> params = (torch.randn(8, 4), torch.randn(8), torch.randn(8, 4), None)
>>> out = torch.randn(4, 8)
>>> z = polynomial_mixing(x, ProductForm(2), params, out, None, chunk_size=4)
>>> torch.allclose(z, reference.polynomial_mixing(x, ProductForm(2), params, out, None), atol=1e-5)
True
"""

import torch

from pom.ops.masking import masked_sum, valid_frame_counts, valid_frames
from pom.ops.polynomial.readout import apply_folded, fold_weight, folds, gated_readout

DEFAULT_CHUNK_SIZE = 1024

#: The forms this op computes (see :func:`supports`).
SUPPORTED_FORMS = "every form"


def supports(form):
    """Whether this op computes ``form``: every form of :mod:`pom.ops.polynomial.forms`."""
    return True


def _autocast_state(device_type):
    if device_type not in ("cuda", "cpu") or not torch.is_autocast_enabled(device_type):
        return None
    return device_type, torch.get_autocast_dtype(device_type)


def _autocast(state):
    if state is None:
        return torch.autocast("cpu", enabled=False)
    return torch.autocast(state[0], dtype=state[1])


def _grads(outputs, inputs, grad_outputs):
    """``torch.autograd.grad`` with ``None`` for inputs that are None, need no gradient or are unused."""
    wanted = [i for i in inputs if i is not None and i.requires_grad]
    found = torch.autograd.grad(outputs, wanted, grad_outputs, allow_unused=True) if wanted else []
    by_id = {id(w): g for w, g in zip(wanted, found)}
    return [None if i is None else by_id.get(id(i)) for i in inputs]


class _ChunkedPolynomialMixing(torch.autograd.Function):
    """``z = W_o(s(x) * H(x)) + b_o``, chunked over time; ``weights = (W_o, b_o, *params)``."""

    @staticmethod
    def forward(ctx, x, valid, form, chunk_size, *weights):
        out_weight, out_bias, *params = weights
        inputs, x = x, x.detach()
        batch, time, _ = x.shape
        # pass 1: H = masked mean of P(x_t), float32 for half precision
        total = None
        for start in range(0, time, chunk_size):
            chunk = slice(start, start + chunk_size)
            part = masked_sum(form.terms(x[:, chunk], params), None if valid is None else valid[:, chunk])
            total = part if total is None else total + part
        counts = valid_frame_counts(valid, batch, time, total.dtype, total.device)
        state = total / counts
        # pass 2: read-out, one chunk at a time (H folded into W_o on long inputs)
        fold, weight, out = folds(state, time, out_weight), None, []
        for start in range(0, time, chunk_size):
            gate = form.gate(x[:, start : start + chunk_size], params)
            if not fold:
                out.append(gated_readout(gate, state, out_weight, out_bias))
                continue
            weight = fold_weight(out_weight, state, gate.dtype) if weight is None else weight
            out.append(apply_folded(gate, weight, out_bias))
        ctx.form, ctx.chunk_size, ctx.fold = form, chunk_size, fold
        ctx.autocast = _autocast_state(x.device.type)
        ctx.save_for_backward(inputs, valid, state, counts, *weights)
        return torch.cat(out, dim=1) if len(out) > 1 else out[0]

    @staticmethod
    def backward(ctx, grad_out):
        x, valid, state, counts, *weights = ctx.saved_tensors
        out_weight, out_bias, *params = weights
        form, chunk_size = ctx.form, ctx.chunk_size
        time = x.shape[1]
        grad_x = torch.zeros_like(x) if ctx.needs_input_grad[0] else None
        grad_weights = [None] * len(weights)

        def accumulate(chunk_grads, start):
            gx, *gw = chunk_grads
            if grad_x is not None and gx is not None:
                grad_x[:, start : start + chunk_size] += gx
            for i, g in enumerate(gw):
                if g is not None:
                    grad_weights[i] = g if grad_weights[i] is None else grad_weights[i] + g

        state_leaf = state.detach().requires_grad_(True)
        grad_state = torch.zeros_like(state)  # float32 for half precision, as in forward
        weight_leaf, grad_weight = None, None  # the folded W_o diag(H) and its gradient dM (float32)
        with torch.enable_grad(), _autocast(ctx.autocast):
            # pass 1: gate side -> grads of x, gate and output weights, and dH
            for start in range(0, time, chunk_size):
                x_c = x[:, start : start + chunk_size].detach().requires_grad_(ctx.needs_input_grad[0])
                gate = form.gate(x_c, params)
                grad_z = grad_out[:, start : start + chunk_size]
                if not ctx.fold:
                    z_c = gated_readout(gate, state_leaf, out_weight, out_bias)
                    gx, gs, *gw = _grads(z_c, [x_c, state_leaf, *weights], grad_z)
                    grad_state += gs.to(grad_state.dtype)
                    accumulate([gx, *gw], start)
                    continue
                if weight_leaf is None:
                    weight_leaf = fold_weight(out_weight.detach(), state, gate.dtype).requires_grad_(True)
                    grad_weight = torch.zeros_like(weight_leaf, dtype=state.dtype)
                gx, gm, *gw = _grads(apply_folded(gate, weight_leaf, out_bias), [x_c, weight_leaf, *weights], grad_z)
                grad_weight += gm.to(grad_weight.dtype)
                accumulate([gx, *gw], start)
            if ctx.fold:  # M = W_o diag(H): dW_o = sum_b dM_b * H_b, dH_b = sum_rows dM_b * W_o
                grad_state += (grad_weight * out_weight.to(grad_weight.dtype)).sum(dim=1, keepdim=True)
                if ctx.needs_input_grad[4]:
                    grad_out_weight = (grad_weight * state).sum(dim=0).to(out_weight.dtype)
                    grad_weights[0] = grad_out_weight if grad_weights[0] is None else grad_weights[0] + grad_out_weight
            # pass 2: polynomial side, dP_t = m_t dH / |V| (the backward of the masked mean)
            grad_terms_all = grad_state / counts
            for start in range(0, time, chunk_size):
                x_c = x[:, start : start + chunk_size].detach().requires_grad_(ctx.needs_input_grad[0])
                terms = form.terms(x_c, params)
                grad_terms = grad_terms_all.to(terms.dtype).expand_as(terms)
                if valid is not None:
                    zero = torch.zeros((), dtype=terms.dtype, device=terms.device)
                    grad_terms = torch.where(valid[:, start : start + chunk_size, None], grad_terms, zero)
                accumulate(_grads(terms, [x_c, *weights], grad_terms), start)
        return (grad_x, None, None, None, *grad_weights)


def polynomial_mixing(
    x, form, params, out_weight, out_bias=None, padding_mask=None, causal=False, dropout_p=0.0, *,
    chunk_size=DEFAULT_CHUNK_SIZE,
):  # fmt: skip
    """PoM's mixing ``W_o(s(x) * H) + b_o``, chunk by chunk over time. Arguments
    as :func:`pom.ops.polynomial.reference.polynomial_mixing`, plus

    Arguments
    ---------
    chunk_size : int
        Frames per chunk; the working set is ``B * chunk_size * state_dim``.

    Returns
    -------
    torch.Tensor
        ``[B, T, d]``.
    """
    if causal:
        raise NotImplementedError(
            "chunked PoM does not support causal=True (running means); use implementation='plain' for causal PoM"
        )
    if dropout_p > 0:
        raise NotImplementedError(
            "chunked PoM cannot reproduce dropout on the gated state in training; use dropout=0 "
            "(the default) or implementation='plain'"
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    valid = valid_frames(padding_mask, x.shape, x.device)
    return _ChunkedPolynomialMixing.apply(x, valid, form, int(chunk_size), out_weight, out_bias, *params)
