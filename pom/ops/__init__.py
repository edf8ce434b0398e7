"""Tensor-level computations of the mixers: functions of tensors, no modules.

The layers of :mod:`pom.mixers` hold parameters and options and call these
ops; ops never import :mod:`pom.mixers` (one direction, as ``mamba_ssm.modules
-> mamba_ssm.ops``; ``tests/test_ops_layering.py`` checks it).

* :mod:`pom.ops.masking`: the masked (valid-frame) mean over time,
  ``\\bar{h} = \\sum_t m_t h_t / \\max(1, \\sum_t m_t)``, its causal and
  chunk-streaming forms, and padding masks from lengths;
* :mod:`pom.ops.polynomial`: PoM's expansion and mixing (reference, chunked, fused);
* :mod:`pom.ops.selective_scan`: Mamba's selective scan (reference, chunked under
  checkpointing, mamba-ssm's kernel) and the choice among them per device.

Example
-------
>>> import torch
>>> masked_mean(torch.tensor([[[2.0], [4.0]]]), torch.tensor([[False, True]]))
tensor([[[2.]]])
"""

from pom.ops.masking import chunked_mean, lengths_to_padding_mask, masked_mean

__all__ = ["chunked_mean", "lengths_to_padding_mask", "masked_mean"]
