"""PoM in float16 and bfloat16 (CPU): activations whose products pass float16's
range (65504) give finite outputs and gradients equal to the float32
computation, in every path (plain, chunked, the fused op's fallback,
causal, streaming) and every form, with float16 tensors and under autocast."""

import pytest
import torch
import torch.nn.functional as F

from pom.mixers import PolynomialMixer
from pom.ops.polynomial import chunked, fused, reference
from pom.ops.polynomial.forms import PowerSeriesForm, ProductForm, TopOrderForm

D, WIDTH, T = 8, 16, 24  # T >= D: H is folded into W_o on the global paths


def draw(*shapes, scale=1.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return tuple(None if s is None else scale * torch.randn(*s, generator=generator) for s in shapes)


def product_params(degree, groups=1):
    # projections scaled so that |a| reaches several hundred: GELU products overflow float16
    d, w = D // groups, degree * WIDTH // groups
    branches = [t for _ in range(groups) for t in draw((w, d), (w,), scale=120.0, seed=1 + _)]
    gates = [t for _ in range(groups) for t in draw((w, d), (w,), seed=10 + _)]
    return tuple(branches + gates)


# form -> (form, its tensors, state width); every form's expansion is evaluated in float32 under float16
FORMS = {
    "product_k2": (ProductForm(2), product_params(2), 2 * WIDTH),
    "product_k3": (ProductForm(3), product_params(3), 3 * WIDTH),
    "product_k2_groups2": (ProductForm(2, groups=2), product_params(2, groups=2), 2 * WIDTH),
    "top_order_k2": (TopOrderForm(2), (*draw((WIDTH, D), (WIDTH,), scale=120.0), *draw((WIDTH, D), None)), WIDTH),
    "power_series_k3": (PowerSeriesForm(3), (*draw((2 * WIDTH, D), (2 * WIDTH,)), *draw((3, WIDTH))), WIDTH),
}

PATHS = {
    "plain": lambda *a, **k: reference.polynomial_mixing(*a, **k),
    "chunked": lambda *a, **k: chunked.polynomial_mixing(*a, **k, chunk_size=5),
    "fused_fallback": lambda *a, **k: fused.polynomial_mixing(*a, **k, chunk_size=5),
    "causal": lambda *a, **k: reference.polynomial_mixing(*a, **k, causal=True),
    "short": lambda *a, **k: reference.polynomial_mixing(*a, **k),  # T < d: the gated product as written
    "streaming": lambda *a, **k: streamed(*a, **k),
}


def streamed(x, form, params, w_out, b_out, padding_mask=None):
    """Chunks of 6 frames with the carried (sum, count) state."""
    state, parts = None, []
    for start in range(0, x.shape[1], 6):
        mask = None if padding_mask is None else padding_mask[:, start : start + 6]
        part, state = reference.streaming_polynomial_mixing(
            x[:, start : start + 6], form, params, w_out, b_out, mask, chunk_size=6, state=state
        )
        parts.append(part)
    return torch.cat(parts, dim=1)


def inputs(path):
    (x,) = draw((2, 5 if path == "short" else T, D), seed=3)
    mask = torch.zeros(x.shape[:2], dtype=torch.bool)
    mask[1, x.shape[1] * 2 // 3 :] = True
    return x, mask


def relative_error(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def run(path, form, params, w_out, b_out, x, mask, dtype, autocast):
    """Output and gradients (x, every tensor) of one path; float16 tensors or float32 under autocast."""
    cast = (lambda t: t) if autocast or dtype == torch.float32 else (lambda t: None if t is None else t.to(dtype))
    leaves = [None if t is None else cast(t).clone().requires_grad_(True) for t in (x, *params, w_out, b_out)]
    context = torch.autocast("cpu", dtype=dtype) if autocast else torch.autocast("cpu", enabled=False)
    with context:
        z = PATHS[path](leaves[0], form, tuple(leaves[1:-2]), leaves[-2], leaves[-1], padding_mask=mask)
    probe = torch.randn(z.shape, generator=torch.Generator().manual_seed(5)).masked_fill(mask.unsqueeze(-1), 0.0)
    grads = torch.autograd.grad((z.float() * probe).sum(), [t for t in leaves if t is not None])
    return z, grads


def overflows_in_float16(form, params, x):
    """Whether the expansion of ``x``, computed in float16 as before, holds an inf."""
    if isinstance(form, PowerSeriesForm):
        return False  # clamped to [-0.1, 6]: 6^3 fits float16; checked for equality only
    a = F.linear(x[..., : D // getattr(form, "groups", 1)].half(), params[0].half(), params[1].half())
    if isinstance(form, TopOrderForm):
        return bool(torch.isinf(F.relu(a) ** form.degree).any())
    branches = F.gelu(a).chunk(form.degree, dim=-1)
    product = branches[0]
    for branch in branches[1:]:
        product = product * branch
    return bool(torch.isinf(product).any())


@pytest.mark.parametrize("autocast", [False, True], ids=["float16_tensors", "autocast"])
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("name", list(FORMS))
def test_float16_equals_float32_where_products_overflow(name, path, autocast):
    """Outputs (float16 tensors, inference) and, under autocast (training: float32
    weights), the gradients of x and of every tensor."""
    form, params, state_dim = FORMS[name]
    if path == "fused_fallback" and not fused.supports(form):
        pytest.skip(f"the fused op computes {fused.SUPPORTED_FORMS}")
    w_out, b_out = draw((D, state_dim), (D,), scale=1e-4, seed=4)
    x, mask = inputs(path)
    tensors = (x, *params, w_out, b_out)
    if not autocast:  # the float32 computation sees the same (float16-rounded) numbers
        tensors = tuple(None if t is None else t.half().float() for t in tensors)
    x, *rest = tensors
    params, w_out, b_out = tuple(rest[:-2]), rest[-2], rest[-1]
    assert overflows_in_float16(form, params, x) != isinstance(form, PowerSeriesForm)
    z32, g32 = run(path, form, params, w_out, b_out, x, mask, torch.float32, autocast=False)
    z16, g16 = run(path, form, params, w_out, b_out, x, mask, torch.float16, autocast)
    assert z16.dtype == torch.float16 and torch.isfinite(z16).all()
    assert relative_error(z16, z32) < 1e-2
    if autocast:
        for got, want in zip(g16, g32):
            assert torch.isfinite(got).all()
            assert relative_error(got, want) < 3e-2


@pytest.mark.parametrize("path", list(PATHS))
def test_bfloat16_keeps_its_dtype_and_float32_range(path):
    """bfloat16 has float32's range: the expansion stays bfloat16 (no float32
    copy), the sums over time are float32, and the same large activations give
    the float32 result to bfloat16 rounding."""
    form, params, state_dim = FORMS["product_k3"]
    assert form.terms(torch.ones(1, D, dtype=torch.bfloat16), tuple(p.bfloat16() for p in params)).dtype == (
        torch.bfloat16
    )
    w_out, b_out = draw((D, state_dim), (D,), scale=1e-4, seed=4)
    x, mask = inputs(path)
    z32, g32 = run(path, form, params, w_out, b_out, x, mask, torch.float32, autocast=False)
    z16, g16 = run(path, form, params, w_out, b_out, x, mask, torch.bfloat16, autocast=True)
    assert z16.dtype == torch.bfloat16
    assert relative_error(z16, z32) < 3e-2
    for got, want in zip(g16, g32):
        assert relative_error(got, want) < 5e-2


def test_float16_mixer_under_autocast_is_finite():
    """The layer (LayerNorm included) on inputs whose GELU products reach 10^5."""
    torch.manual_seed(0)
    mixer = PolynomialMixer(D, degree=2, expansion=2)
    with torch.no_grad():
        mixer.polynomial_proj.weight.mul_(400.0)
    x = torch.randn(2, T, D, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.float16):
        y = mixer(x)
    y.float().sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    torch.testing.assert_close(y.float(), mixer(x).detach(), rtol=2e-2, atol=2e-2)
