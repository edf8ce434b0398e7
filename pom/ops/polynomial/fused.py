"""Fused PoM mixing on GPU: Triton kernels for the product form's state (the
polynomial expansion and the masked mean over time), with the chunked op as
the fallback on other devices.

For the product form with degree ``k`` and branch width ``W = D d``, the
state is, for every utterance ``b`` and channel ``c`` of term ``i``::

    a_j = (W_1 x_t + b_1)_j                  (one GEMM, [B, T, k W], kept)
    H[b, i W + c] = sum_t w_bt prod_{j <= i} gelu(a_j[b, t, c])
    w_bt = 1 / |V_b| on valid frames, 0 on padded frames   (masking.frame_weights)

The reference writes every activated branch, every partial product and
their concatenation (several ``[B, T, k W]`` tensors) and keeps them for
backward. The forward kernel reads ``a`` once per term and writes only
``H`` (``[B, k W]``, float32); the backward kernel recomputes the branches
from ``a`` and writes ``da`` directly::

    da_j = gelu'(a_j) sum_{i >= j} w_bt dH_i prod_{l <= i, l != j} gelu(a_l)

(no division by a branch, so zeros are exact). The kernels read ``a`` in any
dtype and compute in float32; ``H`` is float32. The gate and the read-out stay
in PyTorch (:func:`pom.ops.polynomial.readout.readout`: ``H`` folded into the
output projection on inputs longer than ``d`` frames, one batched GEMM).

Kernels launch on the device of their tensors (:func:`device_guard`), not on
the current CUDA device, so a model on ``cuda:1`` runs without
``torch.cuda.set_device(1)``.

Launch shape: the forward kernel splits time as well as channels and terms
(``FRAMES_PER_PROGRAM`` frames per program, partial sums added in PyTorch), so
a single long utterance gives enough programs for a GPU's SMs; the backward
kernel is one program per tile of ``BLOCK_T`` frames x ``BLOCK_C`` channels.
Every kernel is compiled ahead of time for sm_80 and sm_90 in the test suite
(``tests/test_triton_compile.py``, no GPU needed).

:func:`polynomial_mixing` has the signature of
:func:`pom.ops.polynomial.reference.polynomial_mixing` (plus ``chunk_size``,
used by the fallback) and takes the product form with one group
(:func:`supports`). It runs the kernels on CUDA tensors, and
:func:`pom.ops.polynomial.chunked.polynomial_mixing`, which computes the same
function, elsewhere. With ``TRITON_INTERPRET=1`` set before Triton is
imported, the kernels also run on CPU tensors (slowly): the tests check them
that way against the reference. :func:`product_state` is the kernels' op,
twin of :func:`pom.ops.polynomial.reference.product_state`.

Example
-------
>>> import torch
>>> from pom.ops.polynomial.forms import ProductForm, TopOrderForm
>>> supports(ProductForm(degree=3)), supports(ProductForm(2, groups=2)), supports(TopOrderForm(2))
(True, False, False)
"""

import contextlib
import os
import warnings

import torch
import torch.nn.functional as F

from pom.ops.masking import frame_weights
from pom.ops.polynomial import chunked
from pom.ops.polynomial.forms import ProductForm
from pom.ops.polynomial.readout import readout

try:  # Triton ships with CUDA builds of PyTorch; absent elsewhere
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the installation
    triton = None

BLOCK_T = 32  # frames per tile
BLOCK_C = 64  # channels per tile
#: Frames summed by one forward program. Time is split across programs so that
#: one long utterance still fills the GPU (batch 1, 1200 s = 30k encoder frames
#: -> 118 slices x W/64 x k programs); the per-slice sums are added in PyTorch
#: (a two-stage reduction: deterministic, no atomics).
FRAMES_PER_PROGRAM = 256


def triton_usable(x):
    """Whether the Triton kernels can run on ``x``: Triton importable and ``x``
    on CUDA (or any device under ``TRITON_INTERPRET=1``)."""
    if triton is None:
        return False
    return x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"


#: The forms this op computes (see :func:`supports`).
SUPPORTED_FORMS = "form='product' with one group"


def supports(form):
    """Whether the kernels compute ``form``'s state: the product form with one group."""
    return isinstance(form, ProductForm) and form.groups == 1


_WARNED = set()


def _warn_once(message):
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, stacklevel=3)


if triton is not None:
    # Globals read inside @triton.jit functions must be constexpr: a plain float
    # works under the interpreter but fails to compile for a GPU.
    _INV_SQRT2 = tl.constexpr(0.7071067811865476)
    _INV_SQRT_2PI = tl.constexpr(0.3989422804014327)

    @triton.jit
    def _gelu(a):
        return 0.5 * a * (1.0 + tl.erf(a * _INV_SQRT2))

    @triton.jit
    def _gelu_grad(a):
        return 0.5 * (1.0 + tl.erf(a * _INV_SQRT2)) + a * tl.exp(-0.5 * a * a) * _INV_SQRT_2PI

    @triton.jit
    def _state_forward_kernel(
        a_ptr, w_ptr, part_ptr, T, W, KW, NS, SPAN, K: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr
    ):
        """One program: frames [s SPAN, (s + 1) SPAN) of utterance b, channels
        [c0, c0 + BC) of term i; writes their weighted sum to part[b, s]."""
        b = tl.program_id(0) // NS
        s = tl.program_id(0) % NS
        cs = tl.program_id(1) * BC + tl.arange(0, BC)
        i = tl.program_id(2)
        c_ok = cs < W
        acc = tl.zeros((BC,), dtype=tl.float32)
        t0 = s * SPAN
        t_end = tl.minimum(t0 + SPAN, T)
        while t0 < t_end:  # (a while loop: Triton's interpreter cannot range() over a runtime bound)
            ts = t0 + tl.arange(0, BT)
            t_ok = ts < t_end
            w = tl.load(w_ptr + b * T + ts, mask=t_ok, other=0.0)
            ok = t_ok[:, None] & c_ok[None, :]
            rows = (b * T + ts).to(tl.int64)[:, None] * KW + cs[None, :]  # int64: no overflow on long inputs
            product = tl.full((BT, BC), 1.0, tl.float32)
            for j in tl.static_range(K):
                if j <= i:
                    a = tl.load(a_ptr + rows + j * W, mask=ok, other=0.0).to(tl.float32)
                    product = product * _gelu(a)
            product = tl.where(w[:, None] > 0.0, product, 0.0)  # garbage in padding never counts
            acc += tl.sum(product * w[:, None], axis=0)
            t0 += BT
        tl.store(part_ptr + (b * NS + s) * KW + i * W + cs, acc, mask=c_ok)

    @triton.jit
    def _state_backward_kernel(
        a_ptr, w_ptr, dh_ptr, da_ptr, T, W, KW, NT, K: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr
    ):
        """One program: frames [t0, t0 + BT) of utterance b, channels of branch j."""
        b = tl.program_id(0) // NT
        ts = (tl.program_id(0) % NT) * BT + tl.arange(0, BT)
        cs = tl.program_id(1) * BC + tl.arange(0, BC)
        j = tl.program_id(2)
        t_ok = ts < T
        c_ok = cs < W
        ok = t_ok[:, None] & c_ok[None, :]
        rows = (b * T + ts).to(tl.int64)[:, None] * KW + cs[None, :]
        w = tl.load(w_ptr + b * T + ts, mask=t_ok, other=0.0)
        grad = tl.zeros((BT, BC), dtype=tl.float32)
        for i in tl.static_range(K):
            if i >= j:
                others = tl.full((BT, BC), 1.0, tl.float32)
                for m in tl.static_range(i + 1):
                    if m != j:
                        a_m = tl.load(a_ptr + rows + m * W, mask=ok, other=0.0).to(tl.float32)
                        others = others * _gelu(a_m)
                dh = tl.load(dh_ptr + b * KW + i * W + cs, mask=c_ok, other=0.0)
                grad += dh[None, :] * others
        a_j = tl.load(a_ptr + rows + j * W, mask=ok, other=0.0).to(tl.float32)
        da = tl.where(w[:, None] > 0.0, grad * w[:, None] * _gelu_grad(a_j), 0.0)
        tl.store(da_ptr + rows + j * W, da.to(da_ptr.dtype.element_ty), mask=ok)


def device_guard(tensor):
    """The context in which kernels on ``tensor`` launch: ``torch.cuda.device(tensor.device)``
    for a CUDA tensor (Triton launches on the current device), nothing otherwise."""
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()


class _PolynomialState(torch.autograd.Function):
    """``H = reference.product_state(a, weights, degree)`` with the Triton kernels;
    keeps only ``a`` and ``weights`` for backward."""

    @staticmethod
    def forward(ctx, a, weights, degree):
        a = a.contiguous()
        weights = weights.contiguous()
        batch, time, width_all = a.shape
        width = width_all // degree
        slices = triton.cdiv(time, FRAMES_PER_PROGRAM)
        partial = torch.empty(batch, slices, width_all, device=a.device, dtype=torch.float32)
        grid = (batch * slices, triton.cdiv(width, BLOCK_C), degree)
        with device_guard(a):
            _state_forward_kernel[grid](
                a, weights, partial, time, width, width_all, slices, FRAMES_PER_PROGRAM,
                K=degree, BT=BLOCK_T, BC=BLOCK_C,
            )  # fmt: skip
        ctx.save_for_backward(a, weights)
        ctx.degree = degree
        return partial.sum(dim=1)

    @staticmethod
    def backward(ctx, grad_state):
        a, weights = ctx.saved_tensors
        batch, time, width_all = a.shape
        width = width_all // ctx.degree
        grad_a = torch.empty_like(a)
        n_time = triton.cdiv(time, BLOCK_T)
        grid = (batch * n_time, triton.cdiv(width, BLOCK_C), ctx.degree)
        with device_guard(a):
            _state_backward_kernel[grid](
                a, weights, grad_state.float().contiguous(), grad_a, time, width, width_all, n_time,
                K=ctx.degree, BT=BLOCK_T, BC=BLOCK_C,
            )  # fmt: skip
        return grad_a, None, None


def product_state(projection, weights, degree):
    """The product form's state ``[B, k W]`` float32 with the Triton kernels; same
    call as :func:`pom.ops.polynomial.reference.product_state`."""
    return _PolynomialState.apply(projection, weights, degree)


def polynomial_mixing(
    x, form, params, out_weight, out_bias=None, padding_mask=None, causal=False, dropout_p=0.0, *,
    chunk_size=chunked.DEFAULT_CHUNK_SIZE,
):  # fmt: skip
    """PoM's mixing ``W_o (sigmoid(W_s x_t + b_s) * H) + b_o`` with the fused state
    on CUDA (:func:`triton_usable`), else with the chunked op (``chunk_size``
    frames per chunk). Arguments as :func:`pom.ops.polynomial.reference.polynomial_mixing`;
    ``form`` must be the product form with one group, ``params = (W, b, W_s, b_s)``."""
    if not supports(form):
        raise ValueError(f"fused PoM computes the product form with one group, not {form}; use the chunked op")
    if not triton_usable(x):
        if x.is_cuda and triton is None:
            _warn_once("implementation='fused' needs Triton (pip install triton); using the chunked PyTorch path")
        return chunked.polynomial_mixing(
            x, form, params, out_weight, out_bias, padding_mask, causal, dropout_p, chunk_size=chunk_size
        )
    if causal or dropout_p > 0:
        raise NotImplementedError("fused PoM supports neither causal=True nor dropout; use implementation='plain'")
    batch, time, _ = x.shape
    weights = frame_weights(padding_mask, batch, time, x.device)
    state = product_state(F.linear(x, params[0], params[1]), weights, form.degree)  # float32
    return readout(form.gate(x, params), state.unsqueeze(1), out_weight, out_bias)
