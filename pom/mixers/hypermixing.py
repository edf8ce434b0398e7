"""HyperMixing (HyperConformer, Mai et al. 2023) through the common mixer interface.

SpeechBrain's ``HyperMixing`` generates, from every frame, the weights of a
token-mixing MLP, so the mixing matrix is built from the utterance itself:

.. math::

    W_1 = \\big[\\mathrm{MLP}_1(x_t + p_t)\\big]_{t \\in V}, \\quad
    W_2 = \\big[\\mathrm{MLP}_2(x_t + p_t)\\big]_{t \\in V}, \\qquad
    Y = \\mathrm{LayerNorm}\\big( W_2 \\, \\mathrm{GELU}(W_1^\\top X) \\big)

(``X`` is ``[T, d]``, ``p_t`` absolute positions, padded frames zeroed), which is
linear in ``T``. This wrapper keeps SpeechBrain's module (weights under
``.hypermixing``), drops the dummy ``[B, T, T]`` tensor it returns, and
replaces its fixed positional table (3000 frames, 2 minutes after the 4x
front end, saved in every checkpoint) by the same sinusoids computed on the fly
for any length.

Example
-------
>>> import torch
>>> mixer = HyperMixingMixer(16, hypernet_size=32, nhead=2)
>>> mixer(torch.randn(2, 7, 16)).shape
torch.Size([2, 7, 16])
"""

from speechbrain.nnet.hypermixing import HyperMixing

from pom.mixers.base import TokenMixer
from pom.positions import SinusoidalPositions


class HyperMixingMixer(TokenMixer):
    """SpeechBrain's HyperMixing as a token mixer.

    Arguments
    ---------
    d_model : int
        Feature size.
    hypernet_size : int
        Hidden size of the generated token-mixing MLP (the study uses d_ffn).
    nhead : int
        Number of heads.
    tied : bool
        Tie the two generated weight matrices.
    causal : bool
        Not supported (HyperMixing mixes all frames); raises if True.
    """

    def __init__(self, d_model, hypernet_size=2048, nhead=8, tied=False, causal=False):
        super().__init__()
        if causal:
            raise ValueError("HyperMixingMixer: causal=True is not supported (the token-mixing MLP sees every frame)")
        self.d_model = d_model
        self.hypermixing = HyperMixing(
            input_output_dim=d_model,
            hypernet_size=hypernet_size,
            tied=tied,
            num_heads=nhead,
            max_length=1,
        )
        self.hypermixing.positional_encoding = SinusoidalPositions(d_model)

    def forward(self, x, padding_mask=None):
        """Mixes ``x`` ``[B, T, d]``; ``padding_mask`` ``[B, T]`` True at padded frames."""
        out, _ = self.hypermixing(x, x, x, key_padding_mask=padding_mask)
        return out
