"""Mamba's selective scan (CPU): the chunked scan against its reference twin,
bounded memory, the choice of the scan per device (a GPU faked), and the
dtypes handed to mamba-ssm's kernel (a fake kernel that checks them as the
real one does)."""

import pytest
import torch
import torch.nn.functional as F

from pom.mixers import mamba as mamba_module
from pom.mixers.mamba import Mamba
from pom.ops import selective_scan as scans


def scan_inputs(b=2, t=23, e=5, n=3, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(b, t, e, generator=g, dtype=dtype)
    delta = F.softplus(torch.randn(b, t, e, generator=g, dtype=dtype))
    A = -torch.rand(e, n, generator=g, dtype=dtype) - 0.1
    B, C = torch.randn(b, t, n, generator=g, dtype=dtype), torch.randn(b, t, n, generator=g, dtype=dtype)
    D = torch.randn(e, generator=g, dtype=dtype)
    return u, delta, A, B, C, D


def outputs_and_grads(fn, tensors):
    leaves = [t.clone().requires_grad_(True) for t in tensors]
    y = fn(*leaves)
    probe = torch.randn(y.shape, generator=torch.Generator().manual_seed(5), dtype=y.dtype)
    return y.detach(), torch.autograd.grad((y * probe).sum(), leaves)


@pytest.mark.parametrize("chunk_size", [1, 4, 23, 64])
def test_chunked_scan_matches_its_reference_twin(chunk_size):
    """Outputs and the gradients of u, delta, A, B, C, D (the scan runs in float32)."""
    tensors = scan_inputs()
    y_ref, g_ref = outputs_and_grads(scans.selective_scan, tensors)
    y, g = outputs_and_grads(lambda *t: scans.chunked_selective_scan(*t, chunk_size=chunk_size), tensors)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    for got, want in zip(g, g_ref):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_chunked_scan_keeps_one_state_per_chunk():
    """What autograd saves: the reference keeps every step's state (and e^{ΔA},
    ΔuB), O(T E N); the chunked scan one state per chunk and its inputs."""
    from torch.autograd.graph import saved_tensors_hooks

    def saved_elements(fn, tensors):
        sizes = {}

        def pack(t):
            sizes[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes() // t.element_size()
            return t

        leaves = [t.clone().requires_grad_(True) for t in tensors]
        with saved_tensors_hooks(pack, lambda t: t):
            fn(*leaves)
        return sum(sizes.values())

    b, t, e, n = 2, 256, 8, 16
    tensors = scan_inputs(b, t, e, n, dtype=torch.float32)
    states = b * t * e * n
    assert saved_elements(scans.selective_scan, tensors) > 2 * states  # every step's state and e^{ΔA}
    assert saved_elements(lambda *x: scans.chunked_selective_scan(*x, chunk_size=16), tensors) < states / 2


def test_the_scan_is_chosen_per_device():
    """auto: the kernel on CUDA (an error naming the install without it), PyTorch elsewhere."""
    assert scans.choose_scan("auto", "cpu", kernel_available=False) == "pytorch"
    assert scans.choose_scan("auto", "cuda", kernel_available=True) == "mamba_ssm"
    assert scans.choose_scan("pytorch", "cuda", kernel_available=True) == "pytorch"
    with pytest.raises(RuntimeError, match=r"pip install mamba-ssm .*mixer_options: \{scan: pytorch\}"):
        scans.choose_scan("auto", "cuda", kernel_available=False)
    with pytest.raises(RuntimeError, match="CUDA only"):
        scans.choose_scan("mamba_ssm", "cpu", kernel_available=True)
    with pytest.raises(ValueError, match="unknown scan 'fast'"):
        scans.choose_scan("fast", "cpu", kernel_available=False)


def fake_kernel(calls):
    """Stands in for mamba-ssm's selective_scan_fn: its layout and its dtype checks."""

    def kernel(u, delta, A, B, C, D):
        if delta.dtype != u.dtype or B.dtype != u.dtype or C.dtype != u.dtype:
            raise RuntimeError(f"delta, B, C must have u's dtype {u.dtype}, got {delta.dtype}, {B.dtype}, {C.dtype}")
        if A.dtype != torch.float32 or D.dtype != torch.float32:
            raise RuntimeError("A and D must be float32")
        calls.append(u.dtype)
        # the reference on our layout: [b, E, T] -> [b, T, E]
        y = scans.selective_scan(*(t.transpose(1, 2) for t in (u, delta)), A, B.transpose(1, 2), C.transpose(1, 2), D)
        return y.transpose(1, 2)

    return kernel


def test_kernel_gets_delta_in_the_input_dtype():
    """Under CUDA autocast softplus returns float32 while u, B, C are bfloat16: delta is cast."""
    calls = []
    u, delta, A, B, C, D = scan_inputs(dtype=torch.float32)
    half = [t.to(torch.bfloat16) for t in (u, B, C)]
    y = scans.mamba_ssm_scan(half[0], delta, A, half[1], half[2], D, kernel=fake_kernel(calls))
    assert calls == [torch.bfloat16] and y.dtype == torch.bfloat16 and y.shape == u.shape
    expected = scans.selective_scan(half[0], delta.to(torch.bfloat16), A, half[1], half[2], D)
    torch.testing.assert_close(y, expected)


def test_mamba_on_a_faked_gpu(monkeypatch):
    """A Mamba layer whose input reads as CUDA: with mamba-ssm it runs the kernel (both
    directions, same result as the PyTorch scan); without it, the one-line error."""
    torch.manual_seed(0)
    mixer = Mamba(16, d_state=4).eval()
    x = torch.randn(2, 9, 16)
    expected = mixer(x)
    calls = []
    monkeypatch.setattr(mamba_module, "device_type", lambda tensor: "cuda")
    monkeypatch.setattr(scans, "selective_scan_fn", fake_kernel(calls))
    torch.testing.assert_close(mixer(x), expected, rtol=1e-5, atol=1e-6)
    assert len(calls) == 2
    monkeypatch.setattr(scans, "selective_scan_fn", None)
    with pytest.raises(RuntimeError, match="pip install mamba-ssm"):
        mixer(x)
    pytorch_scan = Mamba(16, d_state=4, scan="pytorch").eval()
    pytorch_scan.load_state_dict(mixer.state_dict())
    torch.testing.assert_close(pytorch_scan(x), expected)


def test_scan_option_is_checked_at_construction(monkeypatch):
    with pytest.raises(ValueError, match="unknown scan 'loop'"):
        Mamba(16, scan="loop")
    monkeypatch.setattr(scans, "selective_scan_fn", None)
    with pytest.raises(ValueError, match="pip install mamba-ssm"):
        Mamba(16, scan="mamba_ssm")


def test_the_scan_option_is_not_part_of_the_architecture():
    """A Mamba pre-trained before the option existed (or with another scan) still fine-tunes."""
    from pom.recipe.checkpoints import EncoderConfig

    saved = {"mixer": "mamba", "d_model": 16, "mixer_options": {"d_state": 4}}
    here = {"mixer": "mamba", "d_model": 16, "mixer_options": {"d_state": 4, "scan": "auto"}}
    assert EncoderConfig.differences(saved, here) == []
    here["mixer_options"]["d_state"] = 8
    assert EncoderConfig.differences(saved, here) == ["mixer_options: {'d_state': 4} (saved) != {'d_state': 8} (here)"]
