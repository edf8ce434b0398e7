"""The two PoM variants of the speech paper, sharing :class:`PolynomialMixer`'s
mean-and-select mechanism (only the per-frame expansion differs).

**Selective PoM** keeps only the top-order term of a single projection:

.. math::

    P(x) = \\mathrm{ReLU}(W x)^{k} \\in \\mathbb{R}^{Dd}, \\qquad
    y_t = \\mathrm{LayerNorm}\\big( W_o [\\sigma(W_s x_t) \\odot \\tfrac{1}{|V|}\\textstyle\\sum_{t \\in V} P(x_t)] \\big)

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

import torch
import torch.nn as nn
import torch.nn.functional as F

from pom.mixers.polynomial import PolynomialMixer, cumulative_products


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

    IMPLEMENTATIONS = ("plain", "chunked")  # no fused kernel for this expansion

    def __init__(self, d_model, degree=2, expansion=2, bias=True, dropout=0.0, output_norm=True, causal=False,
                 implementation="plain", chunk_size=1024):
        nn.Module.__init__(self)
        self._set_implementation(implementation, chunk_size, causal, dropout)
        if degree < 1 or expansion < 1:
            raise ValueError(f"SelectivePolynomialMixer: degree ({degree}) and expansion ({expansion}) must be >= 1")
        self.d_model, self.degree, self.expansion = d_model, degree, expansion
        self.form, self.causal = "selective", causal
        self.state_dim = expansion * d_model
        self.polynomial_proj = nn.Linear(d_model, self.state_dim, bias=bias)
        self.selection_proj = nn.Linear(d_model, self.state_dim, bias=bias)
        self._build_output(d_model, bias, dropout, output_norm)

    def expand(self, x):
        """Top-order term ``ReLU(W x)^k`` and the sigmoid gate."""
        return F.relu(self.polynomial_proj(x)).pow(self.degree), torch.sigmoid(self.selection_proj(x))


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

    IMPLEMENTATIONS = ("plain", "chunked")  # no fused kernel for this expansion

    def __init__(self, d_model, groups=2, degree=2, expansion=2, bias=True, dropout=0.0, output_norm=True, causal=False,
                 implementation="plain", chunk_size=1024):
        nn.Module.__init__(self)
        self._set_implementation(implementation, chunk_size, causal, dropout)
        if groups < 1 or d_model % groups != 0:
            raise ValueError(f"FrequencyAwarePolynomialMixer: d_model ({d_model}) must be divisible by groups ({groups})")
        self.d_model, self.degree, self.expansion, self.groups = d_model, degree, expansion, groups
        self.form, self.causal = "frequency_aware", causal
        group_dim = d_model // groups
        group_width = degree * expansion * group_dim
        self.polynomial_projs = nn.ModuleList(nn.Linear(group_dim, group_width, bias=bias) for _ in range(groups))
        self.selection_projs = nn.ModuleList(nn.Linear(group_dim, group_width, bias=bias) for _ in range(groups))
        self.state_dim = groups * group_width
        self._build_output(d_model, bias, dropout, output_norm)

    def expand(self, x):
        """Per-group product terms and gates, concatenated over groups."""
        terms, gates = [], []
        for x_g, poly, sel in zip(x.chunk(self.groups, dim=-1), self.polynomial_projs, self.selection_projs):
            terms.append(cumulative_products(F.gelu(poly(x_g)).chunk(self.degree, dim=-1)))
            gates.append(torch.sigmoid(sel(x_g)))
        return torch.cat(terms, dim=-1), torch.cat(gates, dim=-1)

    def extra_repr(self):
        return super().extra_repr() + f", groups={self.groups}"
