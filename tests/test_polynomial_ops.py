"""PoM's ops on tensors: every form against its equation, every fast op against
its reference twin (float64), and the masked mean's pieces (CPU).

The fused op's kernels are checked under Triton's interpreter in
tests/test_triton_pom.py (a subprocess); here its CPU fallback and its refusals."""

import pytest
import torch
import torch.nn.functional as F

from pom.ops.masking import frame_weights, masked_mean, masked_sum, valid_frame_counts, valid_frames
from pom.ops.polynomial import IMPLEMENTATIONS, chunked, fused, polynomial_mixing_op, readout, reference
from pom.ops.polynomial.forms import PowerSeriesForm, ProductForm, TopOrderForm

D, WIDTH = 6, 12  # feature size d and branch width D d (expansion 2)


def tensors(*shapes, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return tuple(None if s is None else torch.randn(*s, generator=generator, dtype=dtype) for s in shapes)


def product_params(degree, groups=1):
    d, w = D // groups, degree * WIDTH // groups
    per_group = [(w, d), (w,)] * groups
    return tensors(*per_group, *per_group)


# form -> (form, its tensors, output width state_dim)
FORMS = {
    "product_k1": (ProductForm(1), product_params(1), WIDTH),
    "product_k3": (ProductForm(3), product_params(3), 3 * WIDTH),
    "product_k2_groups3": (ProductForm(2, groups=3), product_params(2, groups=3), 2 * WIDTH),
    "power_series_k3": (PowerSeriesForm(3), tensors((2 * WIDTH, D), (2 * WIDTH,), (3, WIDTH)), WIDTH),
    "top_order_k2": (TopOrderForm(2), tensors((WIDTH, D), None, (WIDTH, D), (WIDTH,)), WIDTH),
}


def batch(t=17, pad=True):
    (x,) = tensors((3, t, D), seed=1)
    mask = torch.zeros(3, t, dtype=torch.bool)
    if pad:
        mask[1, 11:] = True
        mask[2, 3:] = True
        x[1, 11:] = 1e3  # garbage in padded frames must not matter
    return x, (mask if pad else None)


def written_out(form, params, x):
    """Each form's (P(x), s(x)) from its equation, without the forms module."""
    if isinstance(form, PowerSeriesForm):
        w, b, c = params
        a, g = (x @ w.T + b).chunk(2, dim=-1)
        a = a.clamp(min=0) + 0.01 * a.clamp(max=0)
        a = a.clamp(-0.1, 6.0)
        return sum(c[p] * a ** (p + 1) for p in range(form.degree)), torch.clamp(g / 6 + 0.5, 0, 1)
    if isinstance(form, TopOrderForm):
        w, b, s, c = params
        return torch.relu(x @ w.T) ** form.degree, torch.sigmoid(x @ s.T + c)
    terms, gates = [], []
    for g, x_g in enumerate(x.chunk(form.groups, dim=-1)):
        w, b = params[2 * g : 2 * g + 2]
        s, c = params[2 * form.groups + 2 * g : 2 * form.groups + 2 * g + 2]
        branches = F.gelu(x_g @ w.T + b).chunk(form.degree, dim=-1)
        products = [branches[0]]
        for branch in branches[1:]:
            products.append(products[-1] * branch)
        terms += products
        gates.append(torch.sigmoid(x_g @ s.T + c))
    return torch.cat(terms, dim=-1), torch.cat(gates, dim=-1)


@pytest.mark.parametrize("name", list(FORMS))
def test_forms_compute_their_equations(name):
    form, params, state_dim = FORMS[name]
    x, _ = batch()
    terms, gate = written_out(form, params, x)
    torch.testing.assert_close(form.terms(x, params), terms, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(form.gate(x, params), gate, rtol=1e-12, atol=1e-12)
    joint = form.terms_and_gate(x, params)
    torch.testing.assert_close(joint[0], terms, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(joint[1], gate, rtol=1e-12, atol=1e-12)
    assert terms.shape[-1] == gate.shape[-1] == form.state_dim(WIDTH) == state_dim


@pytest.mark.parametrize("name", list(FORMS))
def test_reference_mixing_is_the_gated_mean(name):
    form, params, state_dim = FORMS[name]
    (w_out, b_out) = tensors((D, state_dim), (D,), seed=2)
    x, mask = batch()
    terms, gate = written_out(form, params, x)
    for b, length in enumerate([17, 11, 3]):
        expected = (gate[b, :length] * terms[b, :length].mean(0)) @ w_out.T + b_out
        z = reference.polynomial_mixing(x, form, params, w_out, b_out, mask)
        torch.testing.assert_close(z[b, :length], expected, rtol=1e-10, atol=1e-10)
    running = torch.cumsum(terms, dim=1) / torch.arange(1, 18, dtype=x.dtype).view(1, -1, 1)
    causal = reference.polynomial_mixing(x, form, params, w_out, b_out, causal=True)
    torch.testing.assert_close(causal, (gate * running) @ w_out.T + b_out, rtol=1e-10, atol=1e-10)


def grads_of(op, x, form, params, w_out, b_out, mask, **options):
    leaves = [None if t is None else t.clone().requires_grad_(True) for t in (x, *params, w_out, b_out)]
    z = op(leaves[0], form, tuple(leaves[1:-2]), leaves[-2], leaves[-1], mask, **options)
    probe = torch.randn(z.shape, generator=torch.Generator().manual_seed(5), dtype=z.dtype)
    wanted = [t for t in leaves if t is not None]
    return z.detach(), torch.autograd.grad((z * probe).sum(), wanted)


@pytest.mark.parametrize("name", list(FORMS))
@pytest.mark.parametrize("chunk_size", [1, 4, 17, 64])
@pytest.mark.parametrize("pad", [True, False])
@pytest.mark.parametrize("t", [17, 4])
def test_chunked_op_matches_its_reference_twin(name, chunk_size, pad, t):
    """Outputs and the gradients of x and of every tensor, float64; 17 frames
    (>= d: H folded into W_o) and 4 (< d: the gated product as written)."""
    form, params, state_dim = FORMS[name]
    w_out, b_out = tensors((D, state_dim), (D,), seed=2)
    x, mask = batch(t=t, pad=pad)
    z_ref, g_ref = grads_of(reference.polynomial_mixing, x, form, params, w_out, b_out, mask)
    z, g = grads_of(chunked.polynomial_mixing, x, form, params, w_out, b_out, mask, chunk_size=chunk_size)
    torch.testing.assert_close(z, z_ref, rtol=1e-10, atol=1e-10)
    for got, want in zip(g, g_ref):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("bias", [True, False])
def test_folded_readout_matches_its_reference_twin(bias):
    """(W_o diag(H_b)) s_t + b_o = W_o (s_t * H_b) + b_o: outputs and the gradients
    of the gate, H, W_o and b_o (float64), dropout included (same seed, same mask)."""
    gate, state, w_out, b_out = tensors((3, 9, WIDTH), (3, 1, WIDTH), (D, WIDTH), (D,) if bias else None, seed=4)
    gate = torch.sigmoid(gate)
    for dropout_p in (0.0, 0.3):
        results = []
        for fn in (readout.gated_readout, readout.folded_readout):
            leaves = [None if t is None else t.clone().requires_grad_(True) for t in (gate, state, w_out, b_out)]
            torch.manual_seed(7)
            z = fn(*leaves, dropout_p=dropout_p)
            probe = torch.randn(z.shape, generator=torch.Generator().manual_seed(5), dtype=z.dtype)
            results.append((z, torch.autograd.grad((z * probe).sum(), [t for t in leaves if t is not None])))
        (z_ref, g_ref), (z, g) = results
        torch.testing.assert_close(z, z_ref, rtol=1e-12, atol=1e-12)
        for got, want in zip(g, g_ref):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_readout_folds_one_state_per_utterance_on_long_inputs():
    """The fold needs one H per utterance and pays from T >= d; running means are read as written."""
    w_out = torch.zeros(D, WIDTH)
    assert readout.folds(torch.zeros(2, 1, WIDTH), D, w_out)
    assert not readout.folds(torch.zeros(2, 1, WIDTH), D - 1, w_out)
    assert not readout.folds(torch.zeros(2, D, WIDTH), D, w_out)  # causal: one H per frame


def test_the_fold_keeps_one_wide_tensor_less_for_backward():
    """What autograd saves for the plain op's read-out: the gated [B, T, S] tensor is gone."""
    from torch.autograd.graph import saved_tensors_hooks

    def saved_elements(fn):
        sizes = {}

        def pack(t):
            sizes[t.untyped_storage().data_ptr()] = t.numel()
            return t

        gate = torch.rand(2, 40, WIDTH, requires_grad=True)
        state = torch.randn(2, 1, WIDTH, requires_grad=True)
        w_out = torch.randn(D, WIDTH, requires_grad=True)
        with saved_tensors_hooks(pack, lambda t: t):
            fn(gate, state, w_out)
        return sum(sizes.values())

    wide = 2 * 40 * WIDTH
    literal, folded = saved_elements(readout.gated_readout), saved_elements(readout.folded_readout)
    assert literal >= 2 * wide  # the gate and the gated product
    assert folded <= wide + 2 * D * WIDTH + 2 * WIDTH + D * WIDTH  # the gate, the folded weight, H, W_o


def test_fused_op_falls_back_to_the_chunked_op_on_cpu():
    if fused.triton_usable(torch.zeros(1)):
        pytest.skip("the interpreter runs the kernels on the CPU (tests/test_triton_pom.py checks them)")
    form, params, state_dim = FORMS["product_k3"]
    w_out, b_out = tensors((D, state_dim), (D,), seed=2)
    x, mask = batch()
    z_ref, g_ref = grads_of(reference.polynomial_mixing, x, form, params, w_out, b_out, mask)
    z, g = grads_of(fused.polynomial_mixing, x, form, params, w_out, b_out, mask, chunk_size=5)
    torch.testing.assert_close(z, z_ref, rtol=1e-10, atol=1e-10)
    for got, want in zip(g, g_ref):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_product_state_reference_is_the_masked_mean_of_the_terms():
    """The fused kernels' twin: sum_t w_t P(a_t) with w = frame_weights, garbage in padding ignored."""
    x, mask = batch()
    (a,) = tensors((3, 17, 3 * WIDTH), seed=3)
    a[1, 11:] = float("nan")
    weights = frame_weights(mask, 3, 17, "cpu")
    state = reference.product_state(a, weights, 3)
    expected = masked_mean(ProductForm(3).activate(a.float()), mask)[:, 0]
    assert state.dtype == torch.float32 and torch.isfinite(state).all()
    torch.testing.assert_close(state, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
def test_op_selection_checks_the_form(implementation):
    op = polynomial_mixing_op(implementation, ProductForm(2))
    assert op.__name__ == "polynomial_mixing"
    if implementation == "fused":
        for form in (PowerSeriesForm(2), TopOrderForm(2), ProductForm(2, groups=2)):
            with pytest.raises(ValueError, match="'fused' is for form='product' with one group"):
                polynomial_mixing_op(implementation, form)
    with pytest.raises(ValueError, match="unknown implementation 'triton'"):
        polynomial_mixing_op("triton", ProductForm(2))


def test_fast_ops_refuse_what_they_cannot_compute():
    form, params, state_dim = FORMS["product_k1"]
    x, _ = batch()
    w_out = torch.zeros(D, state_dim, dtype=x.dtype)
    for op in (chunked.polynomial_mixing, fused.polynomial_mixing):
        with pytest.raises(NotImplementedError, match="causal"):
            op(x, form, params, w_out, causal=True)
        with pytest.raises(NotImplementedError, match="dropout"):
            op(x, form, params, w_out, dropout_p=0.1)
    with pytest.raises(ValueError, match="product form with one group"):
        fused.polynomial_mixing(x, TopOrderForm(2), FORMS["top_order_k2"][1], w_out)


def test_streaming_mixing_carries_the_state():
    """Chunks of 4 with the carried (sum, count) = the chunk-wise pass over the whole input."""
    form, params, state_dim = FORMS["product_k3"]
    w_out, b_out = tensors((D, state_dim), (D,), seed=2)
    x, _ = batch(t=12, pad=False)
    whole, _ = reference.streaming_polynomial_mixing(x, form, params, w_out, b_out, chunk_size=4)
    state, parts = None, []
    for start in range(0, 12, 4):
        part, state = reference.streaming_polynomial_mixing(
            x[:, start : start + 4], form, params, w_out, b_out, chunk_size=4, state=state
        )
        parts.append(part)
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(whole[:, 8:], reference.polynomial_mixing(x, form, params, w_out, b_out)[:, 8:])


def test_masked_mean_pieces():
    """masked_sum / valid_frame_counts = masked_mean = sum_t frame_weights_t h_t, NaN padding included."""
    x, mask = batch()
    x[2, 3:] = float("nan")
    valid = valid_frames(mask, x.shape, x.device)
    mean = masked_mean(x, mask)
    counts = valid_frame_counts(valid, 3, 17, x.dtype, x.device)
    torch.testing.assert_close(masked_sum(x, valid) / counts, mean)
    weighted = torch.where(valid.unsqueeze(-1), x, 0.0) * frame_weights(mask, 3, 17, "cpu").double().unsqueeze(-1)
    torch.testing.assert_close(weighted.sum(dim=1, keepdim=True), mean, rtol=1e-6, atol=1e-6)  # float32 weights
    assert counts.flatten().tolist() == [17.0, 11.0, 3.0]
    with pytest.raises(ValueError, match="expected \\[batch, time\\]"):
        masked_mean(x, mask[:, :5])
