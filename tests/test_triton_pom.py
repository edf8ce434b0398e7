"""The fused (Triton) PoM op computes what its reference twin and the plain mixer do.

The kernels run on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1``,
which must be set before Triton is imported: hence a subprocess). On a GPU the
benchmark's ``--check`` mode compares them on the device."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from pom.mixers import PolynomialMixer, SelectivePolynomialMixer

pytest.importorskip("triton")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHECK = textwrap.dedent(
    """
    import torch
    from pom.mixers import PolynomialMixer
    from pom.ops.masking import frame_weights
    from pom.ops.polynomial import fused as tp, reference
    from pom.ops.polynomial.forms import ProductForm

    torch.manual_seed(0)  # the same inputs on every run
    x = torch.randn(3, 45, 10)
    assert tp.triton_usable(x), "the interpreter should accept CPU tensors"
    mask = torch.zeros(3, 45, dtype=torch.bool)
    mask[1, 30:] = True
    mask[2, 3:] = True
    x[1, 30:] = 1e3  # garbage in padded frames must not matter
    # frames per forward program: one slice of time (default), or several, one ending mid-tile
    cases = [(1, 2, True, 256), (2, 2, True, 256), (3, 1, True, 256), (2, 7, False, 256),
             (2, 2, True, 20), (3, 1, False, 8)]
    for degree, expansion, pad, span in cases:
        tp.FRAMES_PER_PROGRAM = span
        torch.manual_seed(degree)
        plain = PolynomialMixer(10, degree=degree, expansion=expansion)
        fused = PolynomialMixer(10, degree=degree, expansion=expansion, implementation="fused")
        fused.load_state_dict(plain.state_dict())
        m = mask if pad else None
        xs = [x.clone().requires_grad_(True) for _ in range(2)]
        outs = [plain(xs[0], m), fused(xs[1], m)]
        torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
        probe = torch.randn_like(outs[0])
        if pad:  # a loss on valid frames only: padded frames must then get no gradient
            probe = probe.masked_fill(mask.unsqueeze(-1), 0.0)
        grads = [torch.autograd.grad((o * probe).sum(), [xi, *mod.parameters()])
                 for o, xi, mod in zip(outs, xs, (plain, fused))]
        for g_plain, g_fused in zip(*grads):
            torch.testing.assert_close(g_fused, g_plain, rtol=1e-4, atol=1e-5)
        if pad:
            assert grads[1][0][1, 30:].abs().max() == 0 and grads[1][0][2, 3:].abs().max() == 0

    # the op on tensors against its reference twin (same signature), gradients of every tensor included
    tp.FRAMES_PER_PROGRAM = 16
    form = ProductForm(3)
    tensors = [torch.randn(3 * 20, 10), torch.randn(3 * 20), torch.randn(3 * 20, 10), None,
               torch.randn(10, 3 * 20), None]
    leaves = [[None if t is None else t.clone().requires_grad_(True) for t in tensors] for _ in range(2)]
    ops = (reference.polynomial_mixing, tp.polynomial_mixing)
    zs = [op(x, form, tuple(leaf[:4]), leaf[4], leaf[5], mask) for op, leaf in zip(ops, leaves)]
    torch.testing.assert_close(zs[1], zs[0], rtol=1e-5, atol=1e-5)
    probe = torch.randn_like(zs[0])
    for t_ref, t_fused in zip(*leaves):
        if t_ref is not None:
            torch.testing.assert_close(torch.autograd.grad((zs[1] * probe).sum(), t_fused, retain_graph=True)[0],
                                       torch.autograd.grad((zs[0] * probe).sum(), t_ref, retain_graph=True)[0],
                                       rtol=1e-4, atol=5e-5)  # sums of degree-3 products: float32 rounding

    # the state kernel alone, against its reference, with a branch that is exactly zero
    tp.FRAMES_PER_PROGRAM = 24  # 3 slices of time, the last one partial
    a = torch.randn(2, 70, 2 * 40)
    a[0, 5, 3] = 0.0
    w = frame_weights(mask[:2, :45].repeat(1, 2)[:, :70], 2, 70, "cpu")
    a1, a2 = a.clone().requires_grad_(True), a.clone().requires_grad_(True)
    h_ref = reference.product_state(a1, w, 2)
    h = tp.product_state(a2, w, 2)
    torch.testing.assert_close(h, h_ref, rtol=1e-5, atol=1e-6)
    dh = torch.randn_like(h)
    torch.testing.assert_close(torch.autograd.grad((h * dh).sum(), a2)[0],
                               torch.autograd.grad((h_ref * dh).sum(), a1)[0], rtol=1e-4, atol=1e-6)

    # float16 with GELU products beyond 65504: the kernels compute in float32, H stays float32
    tp.FRAMES_PER_PROGRAM = 256
    big = [torch.randn(2 * 16, 10) * 120, torch.randn(2 * 16), torch.randn(2 * 16, 10), None,
           torch.randn(10, 2 * 16) * 1e-4]
    xh = torch.randn(2, 45, 10).half()
    z16 = tp.polynomial_mixing(xh, ProductForm(2), tuple(t if t is None else t.half() for t in big[:4]),
                               big[4].half(), None)
    z32 = reference.polynomial_mixing(xh.float(), ProductForm(2), tuple(t if t is None else t.half().float()
                                      for t in big[:4]), big[4].half().float(), None)
    assert z16.dtype == torch.float16 and torch.isfinite(z16).all()
    torch.testing.assert_close(z16.float(), z32, rtol=1e-2, atol=1e-2)
    print("fused PoM matches")
    """
)


def test_fused_kernels_match_plain_under_the_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "fused PoM matches" in proc.stdout


def test_fused_falls_back_to_the_chunked_path_on_cpu():
    """Without the interpreter, CPU tensors take the chunked PyTorch path: same function."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("interpreter mode runs the kernels on the CPU")
    torch.manual_seed(0)
    plain = PolynomialMixer(8, degree=2, expansion=2)
    fused = PolynomialMixer(8, degree=2, expansion=2, implementation="fused", chunk_size=4)
    fused.load_state_dict(plain.state_dict())
    x = torch.randn(2, 11, 8)
    mask = torch.zeros(2, 11, dtype=torch.bool)
    mask[1, 6:] = True
    torch.testing.assert_close(fused(x, mask), plain(x, mask), rtol=1e-5, atol=1e-6)


def test_fused_option_is_refused_where_it_does_not_apply():
    with pytest.raises(ValueError, match="'fused' is for form='product'"):
        PolynomialMixer(8, form="power_series", implementation="fused")
    with pytest.raises(ValueError, match="implementation='fused' supports neither causal=True nor dropout > 0"):
        PolynomialMixer(8, causal=True, implementation="fused")
    with pytest.raises(ValueError, match="unknown implementation 'fused'"):
        SelectivePolynomialMixer(8, implementation="fused")


def test_kernels_launch_on_the_device_of_their_tensors(monkeypatch):
    """Triton launches on the current CUDA device: both kernels are launched inside
    ``device_guard(a)``, which is ``torch.cuda.device(a.device)`` for a CUDA tensor
    (a model on cuda:1 without torch.cuda.set_device(1)); fakes stand in for the GPU."""
    from pom.ops.polynomial import fused as tp

    events, device_guard = [], tp.device_guard

    class Guard:
        def __init__(self, device):
            self.device = device

        def __enter__(self):
            events.append(("enter", self.device))

        def __exit__(self, *exc):
            events.append(("exit", self.device))

    class FakeKernel:
        def __init__(self, name):
            self.name = name

        def __getitem__(self, grid):
            return lambda *args, **kwargs: events.append(("launch", self.name, args[0].device))

    monkeypatch.setattr(tp, "device_guard", lambda tensor: Guard(tensor.device))
    monkeypatch.setattr(tp, "_state_forward_kernel", FakeKernel("forward"))
    monkeypatch.setattr(tp, "_state_backward_kernel", FakeKernel("backward"))
    a = torch.randn(2, 5, 8, requires_grad=True)
    tp.product_state(a, torch.full((2, 5), 0.2), 2).sum().backward()
    cpu = a.device
    assert events == [
        ("enter", cpu), ("launch", "forward", cpu), ("exit", cpu),
        ("enter", cpu), ("launch", "backward", cpu), ("exit", cpu),
    ]  # fmt: skip

    class OnSecondGpu:  # what the guard reads of a tensor on cuda:1
        is_cuda = True
        device = torch.device("cuda", 1)

    guard = device_guard(OnSecondGpu())
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1  # built without touching CUDA
    assert not isinstance(device_guard(torch.zeros(1)), torch.cuda.device)
