"""BEST-RQ's targets and masks: the pieces SpeechBrain's BEST-RQ lacks or that we replace.

SpeechBrain provides most of BEST-RQ (``brq_mask_collate_fn``, ``Fbank``,
``InputNormalization``, ``ConvolutionFrontEnd``, ``NoamScheduler``); this module
holds:

* :class:`RandomProjectionQuantizer` -- the frozen target quantizer, seeded on
  its own (identical on every DDP rank whatever was built before it) and light
  on memory (a matrix product instead of SpeechBrain 1.1's ``[B, V, T, d]``
  distance tensor), always computed in float32.
* :func:`pad_to_multiple`, :func:`masked_stacked_indices` -- frame stacking and
  the mapping from masked fbank frames to encoder frames.

The recipe's support (checkpoints, YAML loading) is in :mod:`pom.recipe`.

Authors
 * pom-speech contributors 2025
"""

import torch
import torch.nn.functional as F


class RandomProjectionQuantizer(torch.nn.Module):
    r"""BEST-RQ's frozen random-projection quantizer.

    For a stacked feature vector :math:`x \in \mathbb{R}^{d_{in}}`, a frozen
    projection :math:`P \in \mathbb{R}^{d_{in} \times d}` (Xavier-uniform) and a
    frozen codebook :math:`C \in \mathbb{R}^{V \times d}` of unit rows:

    .. math::

        y = \frac{x P}{\lVert x P \rVert_2}, \qquad
        \mathrm{code}(x) = \arg\min_v \lVert C_v - y \rVert_2
                         = \arg\max_v \; C_v \cdot y

    The two forms agree because :math:`\lVert C_v - y\rVert^2 = 2 - 2\, C_v
    \cdot y` for unit vectors, so the code is found with one ``[N, d] x [d, V]``
    product instead of a ``[B, V, T, d]`` difference tensor (SpeechBrain 1.1's
    ``RandomProjectionQuantizer``: about 4 GB for a 6 x 60 s batch).
    The normalisation is over the feature axis (an older SpeechBrain version
    normalised over time). ``P`` and ``C`` are buffers (saved in checkpoints,
    never trained) with SpeechBrain's names, drawn from a generator seeded with
    ``seed``, so every DDP rank builds the same quantizer. The quantizer always
    runs in float32, also under bf16/fp16 autocast.

    Arguments
    ---------
    input_dim : int
        Size of the stacked input (4 frames x 80 mels = 320).
    cb_dim : int
        Size of the projected vectors and codes (16).
    cb_vocab : int
        Number of codes (8192).
    seed : int
        Seed of the projection and the codebook.

    Example
    -------
    >>> q = RandomProjectionQuantizer(input_dim=12, cb_dim=4, cb_vocab=32, seed=3)
    >>> x = torch.randn(2, 5, 12)
    >>> codes = q(x)
    >>> codes.shape, codes.dtype
    (torch.Size([2, 5]), torch.int64)
    >>> y = F.normalize(x @ q.P, dim=-1)     # nearest code by distance
    >>> dist = (y.unsqueeze(-2) - q.CB).norm(dim=-1)
    >>> torch.equal(dist.argmin(-1), codes)
    True
    >>> torch.equal(RandomProjectionQuantizer(12, 4, 32, seed=3).CB, q.CB)
    True
    """

    def __init__(self, input_dim, cb_dim, cb_vocab, seed=0):
        super().__init__()
        self.input_dim, self.cb_dim, self.cb_vocab = input_dim, cb_dim, cb_vocab
        generator = torch.Generator().manual_seed(int(seed))
        projection = torch.empty(input_dim, cb_dim)
        torch.nn.init.xavier_uniform_(projection, generator=generator)
        codebook = F.normalize(torch.randn(cb_vocab, cb_dim, generator=generator), dim=-1)
        self.register_buffer("P", projection)
        self.register_buffer("CB", codebook)

    @torch.no_grad()
    def forward(self, x):
        """``x`` ``[..., input_dim]`` -> code indices ``[...]`` (int64)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            y = F.normalize(x.float() @ self.P.float(), dim=-1)
            return (y @ self.CB.float().t()).argmax(dim=-1)


def pad_to_multiple(feats, multiple):
    """Right-pads the time axis (dim 1) of ``[B, T, C]`` features with zeros
    to a multiple of ``multiple`` (BEST-RQ stacks ``multiple`` frames per
    target and the CNN front end reduces time by the same factor).

    Example
    -------
    >>> pad_to_multiple(torch.ones(2, 9, 3), 4).shape
    torch.Size([2, 12, 3])
    >>> pad_to_multiple(torch.ones(2, 8, 3), 4).shape
    torch.Size([2, 8, 3])
    """
    missing = (-feats.shape[1]) % multiple
    if missing == 0:
        return feats
    return F.pad(feats, (0, 0, 0, missing))


def masked_stacked_indices(mask, stack):
    """Maps the masked fbank frame indices of ``compute_mask`` (spans whose
    starts and lengths are multiples of ``stack``) to the indices of the
    stacked frames, i.e. of the encoder frames after the ``stack``-fold CNN
    reduction, in increasing order.

    Example
    -------
    >>> masked_stacked_indices(torch.tensor([0, 1, 2, 3, 12, 13, 14, 15]), 4)
    tensor([0, 3])
    """
    return torch.unique(torch.div(mask, stack, rounding_mode="floor"))
