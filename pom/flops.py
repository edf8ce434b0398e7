"""FLOP counts of token mixers against sequence length (no compute needed).

Counts come from PyTorch's ``FlopCounterMode`` (matrix products, convolutions
and attention kernels; element-wise operations are not counted) run on the
``meta`` device, so any length is counted instantly and without memory.
Scaled-dot-product attention is forced onto its math backend, whose matrix
products are always counted (on a CPU the fused kernel is not).

A linear-time mixer has ``flops(2T) = 2 flops(T)``; self-attention adds the
``4 T^2 d`` of its score and value products, so the ratio tends to 4.

Example
-------
>>> f = [mixer_flops("pom", 16, t, degree=2, expansion=2) for t in (100, 200)]
>>> f[1] / f[0]
2.0
>>> mixer_flops("mha", 16, 400, nhead=2) / mixer_flops("mha", 16, 200, nhead=2) > 3
True

A mixer that is already built (e.g. taken from an encoder built from YAML):

>>> with torch.device("meta"):
...     mixer = build_mixer("pom", 16, degree=2, expansion=2)
>>> module_flops(mixer, 16, 100) == f[0]
True
"""

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from pom.mixers import build_mixer


def count_flops(fn, *args, **kwargs):
    """Total FLOPs of ``fn(*args, **kwargs)`` (multiply-add = 2 FLOPs)."""
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        fn(*args, **kwargs)
    return counter.get_total_flops()


def module_flops(mixer, d_model, seq_len, batch=1, backward=False):
    """FLOPs of a built ``mixer`` (any module with the ``y = mixer(x)``
    interface, e.g. one layer's mixer of an encoder built from YAML; on the
    ``meta`` device it costs nothing) on ``[batch, seq_len, d_model]``, forward
    only or forward plus backward of ``y.sum()`` (gradients are cleared after)."""
    parameter = next(mixer.parameters())
    x = torch.randn(batch, seq_len, d_model, device=parameter.device, dtype=parameter.dtype, requires_grad=backward)

    def run():
        with torch.set_grad_enabled(backward):
            out = mixer(x)
            if backward:
                out.sum().backward()

    flops = count_flops(run)
    mixer.zero_grad(set_to_none=True)
    return flops


def mixer_flops(name, d_model, seq_len, batch=1, backward=False, **options):
    """FLOPs of one mixer layer ``name`` (a :data:`pom.mixers.MIXERS` key) of
    width ``d_model`` on ``[batch, seq_len, d_model]``, forward only or forward
    plus backward."""
    with torch.device("meta"):
        mixer = build_mixer(name, d_model, **options).eval()
    return module_flops(mixer, d_model, seq_len, batch, backward)


def growth_ratios(name, d_model, seq_lens, **options):
    """``flops(T_{i+1}) / flops(T_i)`` over consecutive ``seq_lens``."""
    counts = [mixer_flops(name, d_model, t, **options) for t in seq_lens]
    return [b / a for a, b in zip(counts, counts[1:])]
