"""Memory-lean ("chunked") PoM: the same function as :class:`PolynomialMixer`,
without ever materialising the wide ``[B, T, k*D*d]`` intermediates.

The plain implementation writes, for every frame, the polynomial terms
``P(x_t)``, the gate ``s(x_t) = sigma(W_s x_t)`` and the gated state
``s_t * H`` (all ``k*D*d`` wide, 4-8x ``d_model``) and keeps them for the
backward pass. Here the sequence is processed in chunks of ``chunk_size``
frames:

* **forward**, pass 1: ``H = (1/|V|) sum_{t in V} P(x_t)`` accumulated chunk by
  chunk in float32 (padded frames skipped); pass 2: ``z_t = W_o (s(x_t) * H)``
  chunk by chunk. Only ``x``, the padding mask and ``H`` (``[B, k*D*d]``) are
  kept for backward.
* **backward** recomputes each chunk's intermediates instead of storing them:
  pass 1 (gate side) back-propagates ``dz`` through ``W_o`` and the gate and
  accumulates ``dH = sum_t W_o^T dz_t * s_t``; pass 2 (polynomial side)
  back-propagates ``dP_t = m_t dH / |V|`` through the expansion.

Activation memory per layer drops from ``O(T * k*D*d)`` to ``O(T * d)`` plus
one chunk's working set, at the price of recomputing the expansion once in
backward (as activation checkpointing does). The recomputation runs the
mixer's own modules under the autocast state of the forward pass, so outputs
and gradients match the plain implementation to rounding (the sums over time
are only reassociated). The LayerNorm after the mixer stays outside, in
ordinary autograd.

Supported: :class:`PolynomialMixer` (both forms) and its subclasses
(:class:`SelectivePolynomialMixer`, :class:`FrequencyAwarePolynomialMixer`),
any degree, with or without padding, autocast included. Not supported (a
clear error): causal mode, and dropout > 0 while training (a chunked dropout
mask could not reproduce the plain one).

Example
-------
>>> import torch
>>> from pom.mixers import PolynomialMixer
>>> plain = PolynomialMixer(8, degree=2, expansion=2)
>>> x = torch.randn(2, 11, 8)
>>> z = chunked_polynomial_mixing(plain, x, chunk_size=4)
>>> torch.allclose(z, plain.output_proj(plain.expand(x)[1] * plain.expand(x)[0].mean(1, keepdim=True)), atol=1e-6)
True
"""

import torch
import torch.nn.functional as F

from pom.mixers.polynomial import cumulative_products

DEFAULT_CHUNK_SIZE = 1024


# --------------------------------------------------------------------------- #
# Separable expansions: terms P(x) and gate s(x) computed independently, so
# each pass computes only what it needs. ``expand()`` is the fallback (it
# computes both and the unused half is dropped). tests/test_fast_pom.py checks
# these against ``mixer.expand``.
# --------------------------------------------------------------------------- #
# Functional calls (no module __call__): the backward recomputation then
# triggers no module hooks, which would clash with autograd.grad (e.g.
# FlopCounterMode's module tracker).
def _linear(layer, x):
    return F.linear(x, layer.weight, layer.bias)


def _product_terms(mixer, x):
    return cumulative_products(F.gelu(_linear(mixer.polynomial_proj, x)).chunk(mixer.degree, dim=-1))


def _product_gate(mixer, x):
    return torch.sigmoid(_linear(mixer.selection_proj, x))


def _power_series_halves(mixer, x, half):
    width = mixer.state_dim
    rows = slice(0, width) if half == 0 else slice(width, 2 * width)
    proj = mixer.fused_proj
    return F.linear(x, proj.weight[rows], None if proj.bias is None else proj.bias[rows])


def _power_series_terms(mixer, x):
    a = torch.clamp(F.leaky_relu(_power_series_halves(mixer, x, 0), 0.01), -0.1, 6.0)
    coefficients = mixer.coefficients.to(a.dtype)
    terms, power = coefficients[0] * a, a
    for p in range(1, mixer.degree):
        power = power * a
        terms = terms + coefficients[p] * power
    return terms


def _power_series_gate(mixer, x):
    return F.hardsigmoid(_power_series_halves(mixer, x, 1))


def _selective_terms(mixer, x):
    return F.relu(_linear(mixer.polynomial_proj, x)).pow(mixer.degree)


def _frequency_terms(mixer, x):
    return torch.cat(
        [
            cumulative_products(F.gelu(_linear(poly, x_g)).chunk(mixer.degree, dim=-1))
            for x_g, poly in zip(x.chunk(mixer.groups, dim=-1), mixer.polynomial_projs)
        ],
        dim=-1,
    )


def _frequency_gate(mixer, x):
    return torch.cat(
        [torch.sigmoid(_linear(sel, x_g)) for x_g, sel in zip(x.chunk(mixer.groups, dim=-1), mixer.selection_projs)], dim=-1
    )


_SEPARABLE = {
    "product": (_product_terms, _product_gate),
    "power_series": (_power_series_terms, _power_series_gate),
    "selective": (_selective_terms, _product_gate),
    "frequency_aware": (_frequency_terms, _frequency_gate),
}


def expansion_functions(mixer):
    """``(terms_fn, gate_fn)``, each ``f(mixer, x) -> [B, T, state_dim]``, for a PoM mixer.

    Known forms get separable functions; any other ``expand()``-based mixer gets
    ``expand()`` (correct, but computes the unused half too).
    """
    if getattr(mixer, "form", None) in _SEPARABLE:
        return _SEPARABLE[mixer.form]
    return (lambda m, x: m.expand(x)[0]), (lambda m, x: m.expand(x)[1])


def _autocast_state(device_type):
    if device_type not in ("cuda", "cpu") or not torch.is_autocast_enabled(device_type):
        return None
    return device_type, torch.get_autocast_dtype(device_type)


def _autocast(state):
    if state is None:
        return torch.autocast("cpu", enabled=False)
    return torch.autocast(state[0], dtype=state[1])


def _grads(outputs, inputs, grad_outputs):
    """``torch.autograd.grad`` with unused inputs given ``None``."""
    wanted = [i for i in inputs if i.requires_grad]
    found = torch.autograd.grad(outputs, wanted, grad_outputs, allow_unused=True) if wanted else []
    by_id = {id(w): g for w, g in zip(wanted, found)}
    return [by_id.get(id(i)) for i in inputs]


class _ChunkedPolynomialMixing(torch.autograd.Function):
    """``z = W_o(s(x) * H(x))`` (before the output LayerNorm), chunked over time."""

    @staticmethod
    def forward(ctx, x, valid, mixer, chunk_size, *params):
        terms_fn, gate_fn = expansion_functions(mixer)
        inputs, x = x, x.detach()  # plain tensors for the module calls (hooks, e.g. FlopCounterMode's, see leaves)
        batch, time, _ = x.shape
        # pass 1: H = masked mean of P(x_t), accumulated in float32 as masked_mean does
        total, terms_dtype = None, None
        for start in range(0, time, chunk_size):
            terms = terms_fn(mixer, x[:, start : start + chunk_size])
            terms_dtype = terms.dtype
            acc = terms.float() if terms.dtype in (torch.float16, torch.bfloat16) else terms
            if valid is not None:
                acc = torch.where(valid[:, start : start + chunk_size, None], acc, torch.zeros((), dtype=acc.dtype, device=acc.device))
            part = acc.sum(dim=1, keepdim=True)
            total = part if total is None else total + part
        if valid is None:
            counts = torch.full((batch, 1, 1), float(time), dtype=total.dtype, device=total.device)
        else:
            counts = valid.to(total.dtype).sum(dim=1, keepdim=True).clamp(min=1.0).unsqueeze(-1)
        state = (total / counts).to(terms_dtype)
        # pass 2: gated read-out, one chunk at a time
        out = []
        for start in range(0, time, chunk_size):
            gate = gate_fn(mixer, x[:, start : start + chunk_size])
            out.append(_linear(mixer.output_proj, gate * state))  # dropout: refused in training, identity otherwise
        ctx.mixer, ctx.chunk_size = mixer, chunk_size
        ctx.autocast = _autocast_state(x.device.type)
        ctx.save_for_backward(inputs, valid, state, counts, *params)
        return torch.cat(out, dim=1) if len(out) > 1 else out[0]

    @staticmethod
    def backward(ctx, grad_out):
        x, valid, state, counts, *params = ctx.saved_tensors
        mixer, chunk_size = ctx.mixer, ctx.chunk_size
        terms_fn, gate_fn = expansion_functions(mixer)
        time = x.shape[1]
        grad_x = torch.zeros_like(x) if ctx.needs_input_grad[0] else None
        grad_params = [None] * len(params)

        def accumulate(chunk_grads, start):
            nonlocal grad_x
            gx, *gp = chunk_grads
            if grad_x is not None and gx is not None:
                grad_x[:, start : start + chunk_size] += gx
            for i, g in enumerate(gp):
                if g is not None:
                    grad_params[i] = g if grad_params[i] is None else grad_params[i] + g

        state_leaf = state.detach().requires_grad_(True)
        grad_state = torch.zeros_like(state, dtype=counts.dtype)  # float32 for half precision, as in forward
        with torch.enable_grad(), _autocast(ctx.autocast):
            # pass 1: gate side -> grads of x, gate and output parameters, and dH
            for start in range(0, time, chunk_size):
                x_c = x[:, start : start + chunk_size].detach().requires_grad_(ctx.needs_input_grad[0])
                z_c = _linear(mixer.output_proj, gate_fn(mixer, x_c) * state_leaf)
                gx, gs, *gp = _grads(z_c, [x_c, state_leaf, *params], grad_out[:, start : start + chunk_size])
                grad_state += gs.to(grad_state.dtype)
                accumulate([gx, *gp], start)
            # pass 2: polynomial side, dP_t = m_t dH / |V| (the backward of masked_mean)
            grad_terms_all = (grad_state / counts).to(state.dtype)
            for start in range(0, time, chunk_size):
                x_c = x[:, start : start + chunk_size].detach().requires_grad_(ctx.needs_input_grad[0])
                terms = terms_fn(mixer, x_c)
                grad_terms = grad_terms_all.to(terms.dtype).expand_as(terms)
                if valid is not None:
                    grad_terms = torch.where(
                        valid[:, start : start + chunk_size, None], grad_terms, torch.zeros((), dtype=terms.dtype, device=terms.device)
                    )
                accumulate(_grads(terms, [x_c, *params], grad_terms), start)
        return (grad_x, None, None, None, *grad_params)


def chunked_polynomial_mixing(mixer, x, padding_mask=None, chunk_size=DEFAULT_CHUNK_SIZE):
    """PoM's mixing ``W_o(s(x) * H)`` (everything but the output LayerNorm),
    computed chunk by chunk over time. Same result as the plain
    ``mixer.output_proj(mixer.dropout(gate * masked_mean(terms, padding_mask)))``.

    Arguments
    ---------
    mixer : PolynomialMixer
        A (non-causal) PoM mixer or subclass; its parameters are used as they are.
    x : torch.Tensor
        ``[B, T, d_model]``.
    padding_mask : torch.Tensor, optional
        ``[B, T]`` boolean, True at padded frames.
    chunk_size : int
        Frames per chunk; the working set is ``B * chunk_size * k*D*d``.

    Returns
    -------
    torch.Tensor
        ``[B, T, d_model]``.
    """
    if getattr(mixer, "causal", False):
        raise NotImplementedError(
            "chunked PoM does not support causal=True (running means); use implementation='plain' for causal PoM"
        )
    if mixer.training and mixer.dropout.p > 0:
        raise NotImplementedError(
            "chunked PoM cannot reproduce dropout on the gated state in training; use dropout=0 "
            "(the default) or implementation='plain'"
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    valid = None
    if padding_mask is not None:
        if padding_mask.shape != x.shape[:2]:
            raise ValueError(
                f"padding_mask has shape {tuple(padding_mask.shape)} but the input is {tuple(x.shape)}: "
                f"expected [batch, time] = {tuple(x.shape[:2])}"
            )
        valid = ~padding_mask.to(device=x.device, dtype=torch.bool)
    params = [p for name, p in mixer.named_parameters() if not name.startswith("norm.")]
    return _ChunkedPolynomialMixing.apply(x, valid, mixer, int(chunk_size), *params)
