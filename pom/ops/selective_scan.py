"""Mamba's selective scan, and the choice of who computes it.

For ``u, Δ [b, T, E]``, ``A [E, N]``, ``B, C [b, T, N]`` and ``D [E]``:

.. math::

    h_t = e^{\\Delta_t A} \\odot h_{t-1} + (\\Delta_t u_t) \\, B_t^\\top, \\qquad
    y_t = h_t C_t + D \\odot u_t \\qquad (h_t \\in \\mathbb{R}^{E \\times N}, h_0 = 0)

* :func:`selective_scan`: the reference, a loop over time that keeps every
  state (and ``e^{Δ A}``, ``Δ u B``) for backward: ``3 b T E N`` floats, tens
  of GB for a recipe's batch;
* :func:`chunked_selective_scan`: the same function, chunk by chunk over time
  under activation checkpointing: the forward keeps one state per chunk
  (``b E N`` floats every ``chunk_size`` steps), the backward recomputes one
  chunk at a time, so memory no longer grows with one state per step (still a
  loop over time: slow on a GPU);
* :func:`mamba_ssm_scan`: mamba-ssm's fused CUDA kernel (``pip install
  mamba-ssm``), with ``Δ`` cast to ``u``'s dtype (under autocast ``softplus``
  returns float32 while ``u, B, C`` are half precision, a mix the kernel
  refuses).

The loops run in float32 whatever the input dtype; ``y`` is returned in
``u``'s dtype. :func:`choose_scan` resolves a layer's ``scan`` option for
the device of its input: ``"auto"`` is mamba-ssm's kernel on CUDA (an error
naming the install when it is missing: the PyTorch loop would turn GPU-days
into GPU-months) and the chunked PyTorch scan elsewhere.

Example
-------
>>> import torch
>>> u, delta = torch.randn(2, 9, 3), torch.rand(2, 9, 3)
>>> A, B, C, D = -torch.rand(3, 4), torch.randn(2, 9, 4), torch.randn(2, 9, 4), torch.ones(3)
>>> torch.allclose(chunked_selective_scan(u, delta, A, B, C, D, chunk_size=4), selective_scan(u, delta, A, B, C, D),
...                atol=1e-5)
True
>>> choose_scan("auto", "cpu", kernel_available=False)
'pytorch'
"""

import torch
from torch.utils.checkpoint import checkpoint

try:  # optional CUDA kernels
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
except Exception:  # pragma: no cover - not installed here
    selective_scan_fn = None

#: The values of a Mamba layer's ``scan`` option.
SCANS = ("auto", "pytorch", "mamba_ssm")
#: Time steps per chunk of :func:`chunked_selective_scan` (about the square root of a long input's length).
DEFAULT_CHUNK_SIZE = 64

MISSING_KERNEL = (
    "Mamba on CUDA needs mamba-ssm's selective-scan kernel, which is not installed: pip install mamba-ssm "
    "(or set mixer_options: {scan: pytorch} in the YAML for the PyTorch scan: bounded memory, many times slower)"
)


def kernel_available():
    """Whether mamba-ssm's ``selective_scan_fn`` could be imported."""
    return selective_scan_fn is not None


def choose_scan(scan, device_type, kernel_available):
    """``"mamba_ssm"`` or ``"pytorch"``: who computes the scan of option ``scan``
    on ``device_type`` (``"cuda"``, ``"cpu"``, ...); a RuntimeError (one line)
    for a combination that cannot run or, on CUDA without mamba-ssm, that would
    be too slow to train (``"auto"``)."""
    if scan not in SCANS:
        raise ValueError(f"Mamba: unknown scan '{scan}', expected one of {SCANS}")
    if scan == "pytorch" or (scan == "auto" and device_type != "cuda"):
        return "pytorch"
    if not kernel_available:
        raise RuntimeError(MISSING_KERNEL)
    if device_type != "cuda":
        raise RuntimeError(f"Mamba: scan='mamba_ssm' runs on CUDA only, not on {device_type}; use scan: auto")
    return "mamba_ssm"


def selective_scan(u, delta, A, B, C, D):
    """Reference selective scan (every state kept). ``u, delta: [b, T, E]``,
    ``A: [E, N]``, ``B, C: [b, T, N]``, ``D: [E]``; returns ``y: [b, T, E]``."""
    y, _ = _scan(u, delta, A, B, C, u.new_zeros(u.shape[0], u.shape[2], A.shape[1], dtype=torch.float32))
    return (y + u.float() * D.float()).to(u.dtype)


def _scan(u, delta, A, B, C, h):
    """The recurrence from state ``h`` over ``u``'s steps: ``(y [b, T, E] float32, last state)``."""
    decay = torch.exp(delta.float().unsqueeze(-1) * A.float())  # [b, T, E, N]
    drive = (delta.float() * u.float()).unsqueeze(-1) * B.float().unsqueeze(2)  # [b, T, E, N]
    ys = []
    for step in range(u.shape[1]):
        h = decay[:, step] * h + drive[:, step]
        ys.append(torch.einsum("ben,bn->be", h, C[:, step].float()))
    y = torch.stack(ys, dim=1) if ys else u.new_zeros(u.shape[0], 0, u.shape[2], dtype=torch.float32)
    return y, h


def chunked_selective_scan(u, delta, A, B, C, D, chunk_size=DEFAULT_CHUNK_SIZE):
    """:func:`selective_scan` chunk by chunk under activation checkpointing:
    one ``[b, E, N]`` state kept per ``chunk_size`` steps, each chunk recomputed
    in backward. Same arguments and result."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    h = u.new_zeros(u.shape[0], u.shape[2], A.shape[1], dtype=torch.float32)
    ys = []
    for start in range(0, u.shape[1], chunk_size):
        part = slice(start, start + chunk_size)
        y, h = checkpoint(_scan, u[:, part], delta[:, part], A, B[:, part], C[:, part], h, use_reentrant=False)
        ys.append(y)
    y = torch.cat(ys, dim=1) if ys else u.new_zeros(u.shape[0], 0, u.shape[2], dtype=torch.float32)
    return (y + u.float() * D.float()).to(u.dtype)


def mamba_ssm_scan(u, delta, A, B, C, D, kernel=None):
    """mamba-ssm's ``selective_scan_fn`` (``kernel``; the installed one by
    default) on our ``[b, T, ...]`` layout, ``delta`` cast to ``u``'s dtype, ``A``
    and ``D`` in float32 (the kernel's convention). Same result as
    :func:`selective_scan`."""
    kernel = kernel or selective_scan_fn
    y = kernel(
        u.transpose(1, 2).contiguous(),
        delta.to(u.dtype).transpose(1, 2).contiguous(),
        A.float(),
        B.to(u.dtype).transpose(1, 2).contiguous(),
        C.to(u.dtype).transpose(1, 2).contiguous(),
        D.float(),
    )
    return y.transpose(1, 2).to(u.dtype)
