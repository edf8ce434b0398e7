"""TF32: on for training, off for float32 equivalence checks.

On NVIDIA GPUs since Ampere, float32 matrix products and cuDNN convolutions
may run in TF32: inputs rounded to 10 mantissa bits (relative error about
``5e-4`` per product), float32 accumulation, several times the float32 speed.
Importing SpeechBrain turns it on for both
(``speechbrain.utils.quirks.allow_tf32``; ``SB_DISABLE_QUIRKS=allow_tf32``
keeps it off), and the recipes train that way on purpose: training is as
insensitive to TF32 rounding as to bfloat16's, and the float32 runs (some
fine-tuning rows) and the float32 parts of an autocast step run faster.

An equivalence check in float32 (chunked or fused PoM against plain PoM at a
``1e-4`` tolerance) needs real float32: TF32 alone puts ``1e-4``-``4e-4``
between two correct implementations that only sum in another order.
:func:`tf32_disabled` turns TF32 off for matmuls and cuDNN inside its block
and restores the previous flags after, whatever happens inside. On a CPU the
flags change nothing.

Example
-------
>>> import torch
>>> torch.backends.cuda.matmul.allow_tf32 = True
>>> with tf32_disabled():
...     torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
(False, False)
>>> torch.backends.cuda.matmul.allow_tf32
True
"""

import contextlib

import torch


def tf32_flags():
    """``(matmul, cudnn)``: whether float32 matrix products and cuDNN convolutions may use TF32."""
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def set_tf32_flags(matmul, cudnn):
    """Sets :func:`tf32_flags`."""
    torch.backends.cuda.matmul.allow_tf32 = matmul
    torch.backends.cudnn.allow_tf32 = cudnn


@contextlib.contextmanager
def tf32_disabled():
    """TF32 off for matmuls and cuDNN inside the block; the previous flags restored after."""
    previous = tf32_flags()
    set_tf32_flags(False, False)
    try:
        yield
    finally:
        set_tf32_flags(*previous)
