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

This module is the layer: parameters, options and their validation. The
computations are ops on tensors (:mod:`pom.ops.polynomial`): the form object
(``self.polynomial_form``) holds the expansion, and ``implementation`` picks, once
at construction, the mixing op: ``"plain"`` (the reference), ``"chunked"``
(same function, no wide ``[B, T, state_dim]`` intermediates) or ``"fused"``
(Triton kernels on CUDA); parameters and state dict are the same for all.

Variants (:mod:`pom.mixers.polynomial_variants`) are subclasses that override
:meth:`PolynomialMixer.build_polynomial` (their projections and form) and,
when their parameter layout differs, :meth:`PolynomialMixer.polynomial_parameters`.

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

import functools

import torch
import torch.nn as nn

from pom.mixers.base import TokenMixer
from pom.ops.polynomial import IMPLEMENTATIONS, polynomial_mixing_op
from pom.ops.polynomial.chunked import DEFAULT_CHUNK_SIZE
from pom.ops.polynomial.forms import PowerSeriesForm, ProductForm
from pom.ops.polynomial.reference import streaming_polynomial_mixing


def linear_tensors(*linears):
    """``(W_1, b_1, W_2, b_2, ...)`` of ``nn.Linear`` layers (a bias may be None)."""
    return tuple(tensor for linear in linears for tensor in (linear.weight, linear.bias))


class PolynomialMixer(TokenMixer):
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
        ``"product"`` (the paper's form) or ``"power_series"`` (upstream's newer
        form). Variants pass their form object here, for their own
        :meth:`build_polynomial`.
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
    #: The implementations this class offers (a subset of :data:`pom.ops.polynomial.IMPLEMENTATIONS`).
    IMPLEMENTATIONS = tuple(IMPLEMENTATIONS)

    supports_dynamic_chunks = True
    supports_streaming = True

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
        chunk_size=DEFAULT_CHUNK_SIZE,
    ):
        super().__init__()
        if degree < 1 or expansion < 1:
            raise ValueError(f"{type(self).__name__}: degree ({degree}) and expansion ({expansion}) must be >= 1")
        self.d_model, self.degree, self.expansion, self.causal = d_model, degree, expansion, causal
        self.polynomial_form = self.build_polynomial(form, bias)
        self.state_dim = self.polynomial_form.state_dim(expansion * d_model)
        self.output_proj = nn.Linear(self.state_dim, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model) if output_norm else nn.Identity()
        self._mixing = self._choose_mixing(implementation, chunk_size, causal, dropout)
        self._implementation, self._chunk_size = implementation, chunk_size

    def build_polynomial(self, form, bias):
        """Creates the projections that the polynomial form reads and returns the
        form object (:mod:`pom.ops.polynomial.forms`); ``form`` is the
        constructor's. Variants override it (with :meth:`polynomial_parameters`
        when their tensors are laid out differently)."""
        if form not in self.FORMS:
            raise ValueError(f"{type(self).__name__}: unknown form '{form}', expected one of {self.FORMS}")
        width = self.expansion * self.d_model
        if form == "product":
            self.polynomial_proj = nn.Linear(self.d_model, self.degree * width, bias=bias)
            self.selection_proj = nn.Linear(self.d_model, self.degree * width, bias=bias)
            return ProductForm(self.degree)
        self.fused_proj = nn.Linear(self.d_model, 2 * width, bias=bias)
        self.coefficients = nn.Parameter(0.02 * torch.randn(self.degree, width))
        return PowerSeriesForm(self.degree)

    def polynomial_parameters(self):
        """The tensors ``self.polynomial_form`` reads, in its documented order."""
        if isinstance(self.polynomial_form, PowerSeriesForm):
            return (self.fused_proj.weight, self.fused_proj.bias, self.coefficients)
        return linear_tensors(self.polynomial_proj, self.selection_proj)

    def _choose_mixing(self, implementation, chunk_size, causal, dropout):
        """Validates the implementation once and returns its mixing op."""
        name = type(self).__name__
        if implementation not in self.IMPLEMENTATIONS:
            raise ValueError(
                f"{name}: unknown implementation '{implementation}', expected one of {self.IMPLEMENTATIONS}"
            )
        if implementation == "plain":
            return polynomial_mixing_op("plain", self.polynomial_form)
        if causal or dropout > 0:
            raise ValueError(f"{name}: implementation='{implementation}' supports neither causal=True nor dropout > 0")
        if chunk_size < 1:
            raise ValueError(f"{name}: chunk_size must be >= 1, got {chunk_size}")
        try:
            op = polynomial_mixing_op(implementation, self.polynomial_form)
        except ValueError as err:
            raise ValueError(f"{name}: {err} (use 'chunked')") from None
        return functools.partial(op, chunk_size=chunk_size)

    @property
    def form(self):
        """Name of the polynomial form (``"product"``, ``"power_series"``, ...)."""
        return self.polynomial_form.name

    @property
    def implementation(self):
        """``"plain"``, ``"chunked"`` or ``"fused"``, fixed at construction."""
        return self._implementation

    @implementation.setter
    def implementation(self, value):
        raise AttributeError(
            f"{type(self).__name__}.implementation is chosen at construction: build the mixer with "
            f"implementation='{value}' (YAML: mixer_options: {{implementation: {value}}})"
        )

    @property
    def chunk_size(self):
        """Frames per chunk of the chunked (and fused fallback) implementation."""
        return self._chunk_size

    def _mix(self, op, x, padding_mask, **options):
        """``op(x, form, params, W_o, b_o, padding_mask, ...)``: one of the ops' mixings."""
        dropout_p = self.dropout.p if self.training else 0.0
        return op(
            x, self.polynomial_form, self.polynomial_parameters(), self.output_proj.weight, self.output_proj.bias,
            padding_mask, dropout_p=dropout_p, **options,
        )  # fmt: skip

    def forward(self, x, padding_mask=None, dynchunktrain_config=None):
        """Mixes ``x`` ``[B, T, d_model]`` over time; ``padding_mask`` ``[B, T]`` is True at padded frames.

        With a SpeechBrain ``DynChunkTrainConfig``, frame ``t`` reads the mean up
        to the end of its chunk (within the configured left context)."""
        if dynchunktrain_config is None:
            return self.norm(self._mix(self._mixing, x, padding_mask, causal=self.causal))
        if self.causal:
            raise ValueError(f"{type(self).__name__}: causal=True and dynamic chunks are exclusive")
        z, _ = self._mix(
            streaming_polynomial_mixing, x, padding_mask,
            chunk_size=dynchunktrain_config.chunk_size, left_context_chunks=dynchunktrain_config.left_context_size,
        )  # fmt: skip
        return self.norm(z)

    def forward_streaming(self, x, state=None, padding_mask=None):
        """Processes the next chunk ``x`` ``[B, c, d]`` given the ``state`` returned
        for the previous chunks (None at the start); returns ``(y, state)``.

        The state is the running ``(sum, count)`` of the polynomial terms, so
        ``H = (n_past H_past + n_cur H_cur) / (n_past + n_cur)``. A causal mixer
        gives exactly its full causal pass; otherwise every frame of the chunk
        reads the mean up to the chunk's end (dynamic-chunk semantics)."""
        chunk_size = 1 if self.causal else x.shape[1]
        y, state = self._mix(streaming_polynomial_mixing, x, padding_mask, chunk_size=chunk_size, state=state)
        return self.norm(y), state

    def forward_bounded(self, x, chunk, **extras):
        """One long unpadded sequence ``x`` ``[1, T, d]`` without ``[T, state_dim]`` tensors
        (inference): a causal mixer through its streaming state ``chunk`` frames at a time,
        a global one through the chunked op (the same function: the state in a first pass,
        the gated read-out in a second), the output norm in chunks."""
        if self.causal:  # running mean: the streaming state, chunk by chunk (the same function)
            out, state = torch.empty_like(x), None
            for start in range(0, x.shape[1], chunk):
                out[:, start : start + chunk], state = self.forward_streaming(x[:, start : start + chunk], state)
            return out
        if self.implementation != "plain":  # already without the wide intermediates
            return self(x)
        z = self._mix(polynomial_mixing_op("chunked", self.polynomial_form), x, None, chunk_size=chunk)
        for start in range(0, z.shape[1], chunk):
            z[:, start : start + chunk] = self.norm(z[:, start : start + chunk])
        return z

    def extra_repr(self):
        extra = ""
        if self.implementation != "plain":
            extra = f", implementation={self.implementation}, chunk_size={self.chunk_size}"
        return (
            f"d_model={self.d_model}, degree={self.degree}, expansion={self.expansion}, form={self.form}, "
            f"causal={self.causal}{extra}"
        )
