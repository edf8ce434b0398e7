"""The two PoM variants of the speech paper, subclasses of :class:`PolynomialMixer`
that share its mean-and-select mechanism, implementations and streaming (only
the per-frame expansion differs: each class builds its projections and names
its form, see :mod:`pom.ops.polynomial.forms`).

**Selective PoM** keeps only the top-order term of a single projection:

.. math::

    P(x) = \\mathrm{ReLU}(W x)^{k} \\in \\mathbb{R}^{Dd}, \\qquad
    y_t = \\mathrm{LayerNorm}\\big( W_o [\\sigma(W_s x_t) \\odot
          \\tfrac{1}{|V|}\\textstyle\\sum_{t \\in V} P(x_t)] \\big)

so the state is ``D*d`` wide instead of ``k*D*d``.

**Frequency-aware PoM** splits the ``d`` channels into ``G`` groups (2 or 3; after
the CNN front end, channel groups carry different frequency regions), runs one
product-form PoM expansion per group (``x^{(g)} \\in \\mathbb{R}^{d/G}``) and mixes
all groups in the shared output projection:

.. math::

    P(x) = [P^{(1)}(x^{(1)}) \\,|\\, \\dots \\,|\\, P^{(G)}(x^{(G)})], \\qquad
    s(x) = [\\sigma(W_s^{(1)} x^{(1)}) \\,|\\, \\dots]

Example
-------
>>> import torch
>>> x = torch.randn(2, 7, 12)
>>> SelectivePolynomialMixer(12, degree=2, expansion=2)(x).shape
torch.Size([2, 7, 12])
>>> FrequencyAwarePolynomialMixer(12, groups=3)(x).shape
torch.Size([2, 7, 12])
"""

import torch.nn as nn

from pom.mixers.polynomial import PolynomialMixer, linear_tensors
from pom.ops.polynomial.chunked import DEFAULT_CHUNK_SIZE
from pom.ops.polynomial.forms import ProductForm, TopOrderForm


class SelectivePolynomialMixer(PolynomialMixer):
    """Selective PoM: ``P(x) = ReLU(W x)^k``, state ``D*d`` wide.

    Arguments
    ---------
    d_model : int
        Input and output feature size.
    degree : int
        The power ``k`` of the single term.
    expansion : int
        Expansion ``D``.
    bias : bool
        Whether the projections have biases.
    dropout : float
        Dropout before the output projection.
    output_norm : bool
        LayerNorm on the output.
    causal : bool
        Running mean instead of the global mean.
    implementation, chunk_size :
        As in :class:`PolynomialMixer` (``"chunked"``: same function, less memory).
    """

    IMPLEMENTATIONS = ("plain", "chunked")  # no fused kernel for this form

    def __init__(
        self,
        d_model,
        degree=2,
        expansion=2,
        bias=True,
        dropout=0.0,
        output_norm=True,
        causal=False,
        implementation="plain",
        chunk_size=DEFAULT_CHUNK_SIZE,
    ):
        super().__init__(
            d_model,
            degree,
            expansion,
            TopOrderForm(degree),
            bias,
            dropout,
            output_norm,
            causal,
            implementation,
            chunk_size,
        )

    def build_polynomial(self, form, bias):
        """``W`` and ``W_s``, both ``Linear(d, D d)``, for the top-order form."""
        width = self.expansion * self.d_model
        self.polynomial_proj = nn.Linear(self.d_model, width, bias=bias)
        self.selection_proj = nn.Linear(self.d_model, width, bias=bias)
        return form


class FrequencyAwarePolynomialMixer(PolynomialMixer):
    """Frequency-aware PoM: one product-form PoM expansion per channel group,
    one shared output projection.

    Arguments
    ---------
    d_model : int
        Input and output feature size (divisible by ``groups``).
    groups : int
        Number of channel groups (the paper uses 2 or 3).
    degree : int
        Polynomial degree ``k`` of each group.
    expansion : int
        Expansion ``D`` of each group.
    bias : bool
        Whether the projections have biases.
    dropout : float
        Dropout before the output projection.
    output_norm : bool
        LayerNorm on the output.
    causal : bool
        Running mean instead of the global mean.
    implementation, chunk_size :
        As in :class:`PolynomialMixer` (``"chunked"``: same function, less memory).
    """

    IMPLEMENTATIONS = ("plain", "chunked")  # the fused kernel computes one group

    def __init__(
        self,
        d_model,
        groups=2,
        degree=2,
        expansion=2,
        bias=True,
        dropout=0.0,
        output_norm=True,
        causal=False,
        implementation="plain",
        chunk_size=DEFAULT_CHUNK_SIZE,
    ):
        if groups < 1 or d_model % groups != 0:
            raise ValueError(
                f"FrequencyAwarePolynomialMixer: d_model ({d_model}) must be divisible by groups ({groups})"
            )
        super().__init__(
            d_model,
            degree,
            expansion,
            ProductForm(degree, groups),
            bias,
            dropout,
            output_norm,
            causal,
            implementation,
            chunk_size,
        )

    def build_polynomial(self, form, bias):
        """Per group ``g``: ``W_g`` and ``W_s^(g)``, both ``Linear(d/G, k D d/G)``."""
        self.groups = form.groups
        group_dim = self.d_model // self.groups
        group_width = self.degree * self.expansion * group_dim
        self.polynomial_projs = nn.ModuleList(nn.Linear(group_dim, group_width, bias=bias) for _ in range(self.groups))
        self.selection_projs = nn.ModuleList(nn.Linear(group_dim, group_width, bias=bias) for _ in range(self.groups))
        return form

    def polynomial_parameters(self):
        """``(W_1, b_1, ..., W_G, b_G, S_1, c_1, ..., S_G, c_G)``, the product form's group layout."""
        return linear_tensors(*self.polynomial_projs, *self.selection_projs)

    def extra_repr(self):
        return super().extra_repr() + f", groups={self.groups}"
