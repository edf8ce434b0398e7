"""The chunked PoM implementation computes exactly what the plain one does (CPU):
the chunked op against its reference twin on the mixers' own tensors, and the
``implementation`` option of the mixers."""

import pytest
import torch

from pom.encoder import MixerEncoder
from pom.mixers import FrequencyAwarePolynomialMixer, PolynomialMixer, SelectivePolynomialMixer
from pom.ops.polynomial import chunked, reference

D = 12

CASES = {
    "product_k1": lambda: PolynomialMixer(D, degree=1, expansion=2),
    "product_k2": lambda: PolynomialMixer(D, degree=2, expansion=2),
    "product_k3": lambda: PolynomialMixer(D, degree=3, expansion=1),
    "power_series_k3": lambda: PolynomialMixer(D, degree=3, expansion=2, form="power_series"),
    "selective_k2": lambda: SelectivePolynomialMixer(D, degree=2, expansion=2),
    "frequency_g3": lambda: FrequencyAwarePolynomialMixer(D, groups=3, degree=2, expansion=1),
}


def batch(t=23, dtype=torch.float64, pad=True):
    torch.manual_seed(3)
    x = torch.randn(3, t, D, dtype=dtype)
    mask = torch.zeros(3, t, dtype=torch.bool)
    if pad:
        mask[1, 15:] = True
        mask[2, 4:] = True
        x[1, 15:] = 1e3  # garbage in padded frames must not matter
    return x, (mask if pad else None)


def op_arguments(mixer):
    """What a PoM mixer hands its mixing op: form, its tensors, W_o and b_o."""
    return mixer.polynomial_form, mixer.polynomial_parameters(), mixer.output_proj.weight, mixer.output_proj.bias


def plain_mixing(mixer, x, mask):
    """The plain PoM path without the output LayerNorm (the reference op)."""
    return reference.polynomial_mixing(x, *op_arguments(mixer), mask)


def chunked_mixing(mixer, x, mask=None, chunk_size=chunked.DEFAULT_CHUNK_SIZE):
    """The chunked op on the same tensors."""
    return chunked.polynomial_mixing(x, *op_arguments(mixer), mask, chunk_size=chunk_size)


def grads(mixer, x, out_fn):
    mixer.zero_grad()
    x = x.clone().requires_grad_(True)
    torch.manual_seed(5)
    out = out_fn(x)
    weight = torch.randn_like(out)
    (out * weight).sum().backward()
    return out.detach(), x.grad, {n: p.grad.clone() for n, p in mixer.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", list(CASES))
def test_separate_terms_and_gate_match_the_joint_expansion(name):
    """The chunked op computes P(x) and s(x) in separate passes; the reference both at once."""
    torch.manual_seed(0)
    mixer = CASES[name]().double()
    x, _ = batch()
    form, params = mixer.polynomial_form, mixer.polynomial_parameters()
    terms, gate = form.terms_and_gate(x, params)
    torch.testing.assert_close(form.terms(x, params), terms, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(form.gate(x, params), gate, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("chunk_size", [1, 5, 23, 64])
@pytest.mark.parametrize("pad", [True, False])
def test_chunked_outputs_and_gradients_match_plain(name, chunk_size, pad):
    torch.manual_seed(0)
    mixer = CASES[name]().double().train()
    x, mask = batch(pad=pad)
    out_p, gx_p, gp_p = grads(mixer, x, lambda x: plain_mixing(mixer, x, mask))
    out_c, gx_c, gp_c = grads(mixer, x, lambda x: chunked_mixing(mixer, x, mask, chunk_size))
    torch.testing.assert_close(out_c, out_p, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gx_c, gx_p, rtol=1e-10, atol=1e-10)
    assert gp_c.keys() == gp_p.keys()
    for n in gp_p:
        torch.testing.assert_close(gp_c[n], gp_p[n], rtol=1e-10, atol=1e-10, msg=f"gradient of {n}")
    if pad:
        assert gx_c[2, 4:].abs().sum() > 0  # padded outputs are computed (as in plain) and carry gradient
        assert torch.isfinite(gx_c).all()


def test_gradcheck_float64():
    torch.manual_seed(0)
    mixer = PolynomialMixer(4, degree=3, expansion=1).double()
    x = torch.randn(2, 7, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[1, 5:] = True
    assert torch.autograd.gradcheck(lambda x: chunked_mixing(mixer, x, mask, 3), (x,))


@pytest.mark.parametrize("cls", [PolynomialMixer, SelectivePolynomialMixer, FrequencyAwarePolynomialMixer])
def test_option_on_the_mixer_same_state_dict_same_result_float32(cls):
    torch.manual_seed(0)
    plain = cls(D, degree=2, expansion=2)
    fast = cls(D, degree=2, expansion=2, implementation="chunked", chunk_size=4)
    fast.load_state_dict(plain.state_dict())
    assert plain.state_dict().keys() == fast.state_dict().keys()
    x, mask = batch(dtype=torch.float32)
    out_p, gx_p, gp_p = grads(plain, x, lambda x: plain(x, mask))
    out_c, gx_c, gp_c = grads(fast, x, lambda x: fast(x, mask))
    torch.testing.assert_close(out_c, out_p, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx_c, gx_p, rtol=1e-4, atol=1e-5)
    for n in gp_p:
        torch.testing.assert_close(gp_c[n], gp_p[n], rtol=1e-4, atol=1e-5, msg=f"gradient of {n}")
    assert "implementation=chunked" in repr(fast)


def test_bfloat16_autocast_matches_plain():
    torch.manual_seed(0)
    mixer = PolynomialMixer(D, degree=2, expansion=2)
    x, mask = batch(dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_p, gx_p, gp_p = grads(mixer, x, lambda x: plain_mixing(mixer, x, mask))
        out_c, gx_c, gp_c = grads(mixer, x, lambda x: chunked_mixing(mixer, x, mask, 5))
    assert out_c.dtype == out_p.dtype == torch.bfloat16
    torch.testing.assert_close(out_c.float(), out_p.float(), rtol=2e-2, atol=2e-2)
    for n in gp_p:
        assert gp_c[n].dtype == torch.float32
        torch.testing.assert_close(gp_c[n], gp_p[n], rtol=5e-2, atol=5e-2, msg=f"gradient of {n}")


def test_encoder_with_chunked_pom_matches_plain():
    options = {"degree": 2, "expansion": 2}
    torch.manual_seed(0)
    plain = MixerEncoder(
        20, 16, 2, 32, "pom", options, kernel_size=3, dropout=0.0, positional_encoding="fixed_abs_sine"
    )
    fast = MixerEncoder(
        20,
        16,
        2,
        32,
        "pom",
        {**options, "implementation": "chunked", "chunk_size": 3},
        kernel_size=3,
        dropout=0.0,
        positional_encoding="fixed_abs_sine",
    )
    fast.load_state_dict(plain.state_dict())
    src = torch.randn(2, 10, 20)
    lens = torch.tensor([1.0, 0.6])
    torch.testing.assert_close(fast(src, lens), plain(src, lens), rtol=1e-5, atol=1e-5)


def test_unsupported_modes_are_refused_clearly():
    with pytest.raises(ValueError, match="chunked"):
        PolynomialMixer(D, implementation="chunked", causal=True)
    with pytest.raises(ValueError, match="chunked"):
        PolynomialMixer(D, implementation="chunked", dropout=0.1)
    with pytest.raises(ValueError, match="implementation"):
        PolynomialMixer(D, implementation="triton")
    with pytest.raises(NotImplementedError, match="causal"):
        chunked.polynomial_mixing(torch.randn(1, 4, D), *op_arguments(PolynomialMixer(D)), causal=True)
    with pytest.raises(NotImplementedError, match="dropout"):
        chunked.polynomial_mixing(torch.randn(1, 4, D), *op_arguments(PolynomialMixer(D)), dropout_p=0.1)


def test_implementation_is_chosen_once_at_construction():
    """The mixing op is validated and stored by __init__; switching later is refused, not ignored."""
    mixer = PolynomialMixer(D, implementation="chunked", chunk_size=4)
    assert mixer.implementation == "chunked" and mixer.chunk_size == 4
    with pytest.raises(AttributeError, match="chosen at construction"):
        mixer.implementation = "plain"
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        PolynomialMixer(D, implementation="chunked", chunk_size=0)


def test_activation_memory_does_not_grow_with_the_state_width():
    """What autograd keeps for backward: the plain path stores several
    [B, T, k*D*d] tensors (projection, branches, products, gate; the gated
    product is folded away on inputs longer than d), the chunked one only x and H."""
    from torch.autograd.graph import saved_tensors_hooks

    def saved_elements(mixer, x):
        sizes = {}

        def pack(t):
            sizes[t.data_ptr()] = t.numel()
            return t

        with saved_tensors_hooks(pack, lambda t: t):
            mixer(x)
        param_ptrs = {p.data_ptr() for p in mixer.parameters()}
        return sum(n for ptr, n in sizes.items() if ptr not in param_ptrs)

    torch.manual_seed(0)
    plain = PolynomialMixer(16, degree=3, expansion=2)
    fast = PolynomialMixer(16, degree=3, expansion=2, implementation="chunked", chunk_size=8)
    x = torch.randn(2, 64, 16, requires_grad=True)
    state = 3 * 2 * 16
    assert saved_elements(plain, x) > 3 * x.shape[0] * x.shape[1] * state
    assert saved_elements(fast, x) < 4 * x.numel() + x.shape[0] * state + 1000


def test_torch_compile_matches_eager():
    """``benchmarks/efficiency.py --compile`` fuses the plain mixer with torch.compile
    (Inductor; a C++ compiler on CPU): same outputs and gradients as eager, padding included."""
    mixer = PolynomialMixer(D, degree=2, expansion=2)
    compiled = torch.compile(mixer, dynamic=False)
    x, mask = batch(t=17, dtype=torch.float32)
    x_eager = x.clone().requires_grad_(True)
    x_comp = x.clone().requires_grad_(True)
    eager_out = mixer(x_eager, mask)
    comp_out = compiled(x_comp, mask)
    torch.testing.assert_close(comp_out, eager_out, rtol=1e-5, atol=1e-5)
    probe = torch.randn_like(eager_out).masked_fill(mask.unsqueeze(-1), 0.0)  # a loss on valid frames
    eager_grads = torch.autograd.grad((eager_out * probe).sum(), [x_eager, *mixer.parameters()])
    comp_grads = torch.autograd.grad((comp_out * probe).sum(), [x_comp, *mixer.parameters()])
    for e, c in zip(eager_grads, comp_grads):
        torch.testing.assert_close(c, e, rtol=1e-4, atol=1e-5)
    assert comp_grads[0][1, 15:].abs().max() == 0, "no gradient into padded frames"
