"""Polynomial Mixer (PoM): a linear-time replacement for self-attention.

PoM (Picard et al.; Feillet et al., ICASSP 2026 for speech) summarises the whole
sequence into one global polynomial state and lets every frame read that state
through a learned gate. With ``k`` the degree, ``D`` the expansion and
``h = GELU``, the paper's form ("product") is

.. math::

    a_m(x) &= h(W_m x), \\qquad m = 1..k, \\quad W_m \\in \\mathbb{R}^{Dd \\times d} \\\\
    P(x) &= \\big[\\, a_1 \\;|\\; a_1 a_2 \\;|\\; \\dots \\;|\\; \\textstyle\\prod_{m \\le k} a_m \\,\\big]
        \\in \\mathbb{R}^{kDd} \\\\
    H &= \\frac{1}{|V|} \\sum_{t \\in V} P(x_t) \\qquad (V: \\text{valid, non-padded frames}) \\\\
    y_t &= \\mathrm{LayerNorm}\\big( W_o \\, [\\sigma(W_s x_t) \\odot H] \\big)

``W_1..W_k`` are the ``k`` chunks of one ``Linear(d, k*D*d)``. Time and memory
are linear in the sequence length, and the mean runs over valid frames only, so
outputs do not depend on padding (unlike the authors' speech code, which also
averages padded frames). No attention matrix is ever built or returned.

``form="power_series"`` selects upstream's newer compact form
(davidpicard/pom): one fused projection gives ``a`` and the gate logits ``g``,

.. math::

    a &= \\mathrm{clamp}(\\mathrm{LeakyReLU}_{0.01}(W_a x), -0.1, 6), \\qquad
    P(x) = \\sum_{p=1}^{k} c_p \\odot a^{p} \\in \\mathbb{R}^{Dd} \\\\
    y_t &= \\mathrm{LayerNorm}\\big( W_o [\\mathrm{hardsigmoid}(W_g x_t) \\odot H] \\big)

with learned per-channel coefficients ``c_p`` (initialised near 0), so the
state is ``D*d`` wide whatever the degree.

``causal=True`` replaces the global mean by the running mean over frames up
to ``t`` (a streaming-friendly PoM, still linear time).

``implementation="chunked"`` computes the same function chunk by chunk over
time without storing the wide ``[B, T, state_dim]`` intermediates (see
:mod:`pom.mixers.fast_polynomial`); parameters and state dict are unchanged.

Example
-------
>>> import torch
>>> mixer = PolynomialMixer(d_model=16, degree=2, expansion=2)
>>> x = torch.randn(2, 10, 16)
>>> pad = torch.zeros(2, 10, dtype=torch.bool); pad[1, 6:] = True
>>> mixer(x, pad).shape
torch.Size([2, 10, 16])
>>> PolynomialMixer(16, degree=3, expansion=2, form="power_series")(x).shape
torch.Size([2, 10, 16])
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from pom.mixers.masking import chunked_mean, masked_mean


def cumulative_products(branches):
    """Returns ``[a_1, a_1 a_2, ..., a_1...a_k]`` concatenated on the last dim.

    Arguments
    ---------
    branches : list of torch.Tensor
        The activated branches ``a_m``, all of the same shape.

    Returns
    -------
    torch.Tensor
        The ``k`` polynomial terms concatenated on the channel dimension.

    Example
    -------
    >>> a = [torch.tensor([2.0]), torch.tensor([3.0]), torch.tensor([0.5])]
    >>> cumulative_products(a)
    tensor([2., 6., 3.])
    """
    terms = [branches[0]]
    for branch in branches[1:]:
        terms.append(terms[-1] * branch)
    return torch.cat(terms, dim=-1)


class PolynomialMixer(nn.Module):
    """Polynomial Mixer with the speech paper's branch-product form (default)
    or upstream's compact power-series form.

    Arguments
    ---------
    d_model : int
        Input and output feature size ``d``.
    degree : int
        Polynomial degree ``k`` (paper's base model: 2).
    expansion : int
        Expansion ``D`` of each branch (paper's base model: 2).
    form : str
        ``"product"`` (the paper's form) or ``"power_series"`` (upstream's newer form).
    bias : bool
        Whether the projections have biases.
    dropout : float
        Dropout on the gated state before the output projection.
    output_norm : bool
        Whether a LayerNorm is applied to the mixer output (the paper does).
    causal : bool
        If True, frame ``t`` only sees frames ``<= t`` (running mean).
    implementation : str
        ``"plain"`` (default), ``"chunked"`` (same outputs and gradients, less
        activation memory; not with ``causal`` or with ``dropout > 0``) or
        ``"fused"`` (the product form's state in Triton kernels on CUDA, the
        chunked path elsewhere; same restrictions).
    chunk_size : int
        Frames per chunk of the ``"chunked"`` implementation.
    """

    FORMS = ("product", "power_series")
    IMPLEMENTATIONS = ("plain", "chunked", "fused")

    def __init__(
        self,
        d_model,
        degree=2,
        expansion=2,
        form="product",
        bias=True,
        dropout=0.0,
        output_norm=True,
        causal=False,
        implementation="plain",
        chunk_size=1024,
    ):
        super().__init__()
        self._set_implementation(implementation, chunk_size, causal, dropout)
        if form not in self.FORMS:
            raise ValueError(f"PolynomialMixer: unknown form '{form}', expected one of {self.FORMS}")
        if degree < 1 or expansion < 1:
            raise ValueError(f"PolynomialMixer: degree ({degree}) and expansion ({expansion}) must be >= 1")
        if implementation == "fused" and form != "product":
            raise ValueError("PolynomialMixer: implementation='fused' is for form='product' (use 'chunked')")
        self.d_model = d_model
        self.degree = degree
        self.expansion = expansion
        self.form = form
        self.causal = causal
        width = expansion * d_model
        if form == "product":
            self.polynomial_proj = nn.Linear(d_model, degree * width, bias=bias)
            self.selection_proj = nn.Linear(d_model, degree * width, bias=bias)
            self.state_dim = degree * width
        else:
            self.fused_proj = nn.Linear(d_model, 2 * width, bias=bias)
            self.coefficients = nn.Parameter(0.02 * torch.randn(degree, width))
            self.state_dim = width
        self._build_output(d_model, bias, dropout, output_norm)

    def _build_output(self, d_model, bias, dropout, output_norm):
        """The shared read-out: dropout, ``W_o`` (state_dim -> d_model), LayerNorm."""
        self.output_proj = nn.Linear(self.state_dim, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model) if output_norm else nn.Identity()

    def _set_implementation(self, implementation, chunk_size, causal, dropout):
        name = type(self).__name__
        if implementation not in self.IMPLEMENTATIONS:
            raise ValueError(f"{name}: unknown implementation '{implementation}', expected one of {self.IMPLEMENTATIONS}")
        if implementation in ("chunked", "fused") and (causal or dropout > 0):
            raise ValueError(f"{name}: implementation='{implementation}' supports neither causal=True nor dropout > 0")
        self.implementation, self.chunk_size = implementation, chunk_size

    def expand(self, x):
        """Per-frame polynomial terms ``P(x_t)`` and gate ``s(x_t)``, both ``[B, T, state_dim]``."""
        if self.form == "product":
            branches = F.gelu(self.polynomial_proj(x)).chunk(self.degree, dim=-1)
            return cumulative_products(branches), torch.sigmoid(self.selection_proj(x))
        a, gate_logits = self.fused_proj(x).chunk(2, dim=-1)
        a = torch.clamp(F.leaky_relu(a, 0.01), -0.1, 6.0)
        coefficients = self.coefficients.to(a.dtype)
        terms = coefficients[0] * a
        power = a
        for p in range(1, self.degree):
            power = power * a
            terms = terms + coefficients[p] * power
        return terms, F.hardsigmoid(gate_logits)

    #: Reads SpeechBrain dynamic-chunk configurations and streams chunk by chunk.
    supports_dynamic_chunks = True

    def _select(self, gate, means):
        return self.norm(self.output_proj(self.dropout(gate * means)))

    def forward(self, x, padding_mask=None, dynchunktrain_config=None):
        """Mixes ``x`` ``[B, T, d_model]`` over time; ``padding_mask`` ``[B, T]`` is True at padded frames.

        With a SpeechBrain ``DynChunkTrainConfig``, frame ``t`` reads the mean up
        to the end of its chunk (within the configured left context)."""
        if dynchunktrain_config is not None:
            if self.causal:
                raise ValueError("PolynomialMixer: causal=True and dynamic chunks are exclusive")
            terms, gate = self.expand(x)
            means, _ = chunked_mean(
                terms, padding_mask, dynchunktrain_config.chunk_size, dynchunktrain_config.left_context_size
            )
            return self._select(gate, means)
        if getattr(self, "implementation", "plain") == "chunked":
            from pom.mixers.fast_polynomial import chunked_polynomial_mixing

            return self.norm(chunked_polynomial_mixing(self, x, padding_mask, self.chunk_size))
        if getattr(self, "implementation", "plain") == "fused":
            from pom.mixers.triton_polynomial import fused_polynomial_mixing

            return self.norm(fused_polynomial_mixing(self, x, padding_mask))
        terms, gate = self.expand(x)
        return self._select(gate, masked_mean(terms, padding_mask, causal=self.causal))

    def forward_streaming(self, x, state=None, padding_mask=None):
        """Processes the next chunk ``x`` ``[B, c, d]`` given the ``state`` returned
        for the previous chunks (None at the start); returns ``(y, state)``.

        The state is the running ``(sum, count)`` of the polynomial terms, so
        ``H = (n_past H_past + n_cur H_cur) / (n_past + n_cur)``. A causal mixer
        gives exactly its full causal pass; otherwise every frame of the chunk
        reads the mean up to the chunk's end (dynamic-chunk semantics)."""
        terms, gate = self.expand(x)
        means, state = chunked_mean(terms, padding_mask, chunk_size=1 if self.causal else x.shape[1], state=state)
        return self._select(gate, means), state

    def extra_repr(self):
        extra = ""
        if getattr(self, "implementation", "plain") != "plain":
            extra = f", implementation={self.implementation}, chunk_size={self.chunk_size}"
        return f"d_model={self.d_model}, degree={self.degree}, expansion={self.expansion}, form={self.form}, causal={self.causal}{extra}"
