"""Mamba (Gu and Dao, 2023): a selective state-space token mixer, optionally bidirectional.

One direction, with ``x`` projected to the inner width ``E`` (``expand * d``),
a causal depthwise convolution, and input-dependent step ``\\Delta_t`` and
matrices ``B_t, C_t``:

.. math::

    u_t &= \\mathrm{SiLU}(\\mathrm{conv}(W_x x)_t), \\qquad z_t = W_z x_t \\\\
    h_t &= e^{\\Delta_t A} h_{t-1} + \\Delta_t B_t u_t, \\qquad
    y_t = \\big(C_t h_t + D u_t\\big) \\odot \\mathrm{SiLU}(z_t) \\\\
    \\text{out}_t &= W_o y_t

with ``A = -exp(A_log)`` (``E x N``, ``N = d_state``). The bidirectional mixer
(the BEST-RQ study's) adds a second Mamba run on each utterance reversed
**within its valid length**, so padding never reaches valid frames in either
direction.

The scan (:mod:`pom.ops.selective_scan`) is chosen by the ``scan`` option for
the device of the input: ``"auto"`` (default) runs ``mamba-ssm``'s fused
kernel on CUDA (``pip install mamba-ssm``; without it a CUDA forward stops with
a one-line error saying so) and the PyTorch scan elsewhere; ``"pytorch"``
runs the PyTorch scan everywhere (a loop over time, chunked under activation
checkpointing: memory bounded, but many times slower than the kernel on a GPU);
``"mamba_ssm"`` requires the kernel. ``Δ`` is cast to the dtype of ``u`` for the
kernel (autocast's ``softplus`` returns float32).

Example
-------
>>> import torch
>>> Mamba(16, d_state=4)(torch.randn(2, 6, 16)).shape
torch.Size([2, 6, 16])
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from pom.mixers.base import TokenMixer
from pom.ops.selective_scan import SCANS, choose_scan, chunked_selective_scan, kernel_available, mamba_ssm_scan


def device_type(tensor):
    """The device type the scan is chosen for (one place, so that a test can stand in for a GPU)."""
    return tensor.device.type


class MambaDirection(nn.Module):
    """One (left-to-right) Mamba block; see the module docstring."""

    def __init__(self, d_model, d_state=16, d_conv=4, expand=2, dt_min=0.001, dt_max=0.1, scan="auto"):
        super().__init__()
        if scan not in SCANS:
            raise ValueError(f"Mamba: unknown scan '{scan}', expected one of {SCANS}")
        if scan == "mamba_ssm" and not kernel_available():
            raise ValueError("Mamba: scan='mamba_ssm' needs mamba-ssm: pip install mamba-ssm (or scan: auto)")
        self.scan = scan
        inner = expand * d_model
        self.inner, self.d_state = inner, d_state
        self.dt_rank = math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * inner, bias=False)
        self.conv = nn.Conv1d(inner, inner, d_conv, groups=inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, inner)
        dt = torch.exp(torch.rand(inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(inner, 1))
        self.D = nn.Parameter(torch.ones(inner))
        self.out_proj = nn.Linear(inner, d_model, bias=False)

    def forward(self, x):
        """``x`` ``[b, T, d]`` -> ``[b, T, d]``, causal."""
        t = x.shape[1]
        u, z = self.in_proj(x).chunk(2, dim=-1)
        u = F.silu(self.conv(u.transpose(1, 2))[..., :t]).transpose(1, 2)
        dt, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt))
        A = -torch.exp(self.A_log.float())
        if choose_scan(self.scan, device_type(u), kernel_available()) == "mamba_ssm":
            y = mamba_ssm_scan(u, delta, A, B, C, self.D)
        else:
            y = chunked_selective_scan(u, delta, A, B, C, self.D)
        return self.out_proj(y * F.silu(z))


def reverse_within_length(x, padding_mask):
    """Reverses each sequence of ``x`` ``[B, T, ...]`` within its valid length
    (padded frames stay at the end). Its own inverse.

    Example
    -------
    >>> x = torch.arange(4.).view(1, 4, 1)
    >>> reverse_within_length(x, torch.tensor([[False, False, False, True]]))[0, :, 0]
    tensor([2., 1., 0., 3.])
    """
    if padding_mask is None:
        return x.flip(1)
    t = x.shape[1]
    lengths = (~padding_mask).sum(dim=1, keepdim=True)
    steps = torch.arange(t, device=x.device).unsqueeze(0)
    index = torch.where(steps < lengths, lengths - 1 - steps, steps)
    index = index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return torch.gather(x, 1, index)


class Mamba(TokenMixer):
    """Mamba token mixer (bidirectional by default, as in the BEST-RQ study).

    Arguments
    ---------
    d_model : int
        Feature size.
    d_state : int
        State size ``N`` per channel.
    d_conv : int
        Causal convolution kernel.
    expand : int
        Inner width ``expand * d_model``.
    bidirectional : bool
        Add a right-to-left Mamba (summed). Forced off by ``causal=True``.
    causal : bool
        Left-to-right only.
    scan : str
        Who computes the selective scan: ``"auto"`` (mamba-ssm's kernel on
        CUDA, required there; PyTorch elsewhere), ``"pytorch"`` or ``"mamba_ssm"``.
    """

    def __init__(self, d_model, d_state=16, d_conv=4, expand=2, bidirectional=True, causal=False, scan="auto"):
        super().__init__()
        self.causal = causal
        self.bidirectional = bidirectional and not causal
        self.forward_mamba = MambaDirection(d_model, d_state, d_conv, expand, scan=scan)
        self.backward_mamba = None
        if self.bidirectional:
            self.backward_mamba = MambaDirection(d_model, d_state, d_conv, expand, scan=scan)

    def forward(self, x, padding_mask=None):
        """Mixes ``x`` ``[B, T, d]``; ``padding_mask`` ``[B, T]`` True at padded frames."""
        if padding_mask is not None:
            padding_mask = padding_mask.to(device=x.device, dtype=torch.bool)
            x = torch.where(padding_mask.unsqueeze(-1), torch.zeros((), dtype=x.dtype, device=x.device), x)
        out = self.forward_mamba(x)
        if self.backward_mamba is not None:
            out = out + reverse_within_length(self.backward_mamba(reverse_within_length(x, padding_mask)), padding_mask)
        return out
