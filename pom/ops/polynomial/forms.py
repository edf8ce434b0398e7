"""The per-frame polynomial forms of PoM: terms ``P(x)`` and gate ``s(x)``.

A form is a small frozen description (its degree, its channel groups) whose
methods are pure functions of ``x [..., d]`` and a tuple of tensors
``params`` (the layer's weights, in the order the form documents). Every
op of :mod:`pom.ops.polynomial` reads PoM's expansion through a form, so each
expansion is written once, here. With ``h = GELU`` and ``k`` the degree:

.. math::

    \\text{product:}\\quad & a = W x + b, \\quad
        P(x) = [\\, h(a_1) \\,|\\, h(a_1) h(a_2) \\,|\\, \\dots \\,|\\, \\textstyle\\prod_{m \\le k} h(a_m) \\,],
        \\quad s(x) = \\sigma(W_s x + b_s) \\\\
    \\text{power series:}\\quad & a = \\mathrm{clamp}(\\mathrm{LeakyReLU}_{0.01}(W_a x + b_a), -0.1, 6), \\quad
        P(x) = \\textstyle\\sum_{p \\le k} c_p \\odot a^p, \\quad s(x) = \\mathrm{hardsigmoid}(W_g x + b_g) \\\\
    \\text{top order:}\\quad & P(x) = \\mathrm{ReLU}(W x + b)^k, \\quad s(x) = \\sigma(W_s x + b_s)

The product form with ``G`` groups applies the product form to each of ``G``
equal channel slices of ``x`` with its own weights and concatenates the
results (frequency-aware PoM). Weights are read with ``F.linear`` (no module
calls), so recomputing a form in a backward pass triggers no module hooks.

Precision: the projections run in the autocast dtype; ``P(x)`` is evaluated
in float32 when that dtype is float16 (:func:`polynomial_input`): a product of
two GELUs passes float16's largest value, 65504, once ``|a|`` passes about
256 (about 40 for three). bfloat16 has float32's range and is kept (8
significant bits per factor; every sum over time is float32). The gates
(sigmoid, hardsigmoid) lie in ``[0, 1]`` and keep the autocast dtype.

Example
-------
>>> import torch
>>> form = ProductForm(degree=2)
>>> w, b = torch.eye(2).repeat(2, 1), torch.zeros(4)
>>> x = torch.tensor([[1.0, 2.0]])
>>> g = torch.nn.functional.gelu(x)
>>> torch.allclose(form.terms(x, (w, b, w, b)), torch.cat([g, g * g], dim=-1))
True
>>> form.state_dim(width=2)
4
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def polynomial_input(projection):
    """``projection`` in the dtype ``P`` is evaluated in: float32 for float16, unchanged otherwise.

    Example
    -------
    >>> polynomial_input(torch.ones(1, dtype=torch.float16)).dtype, polynomial_input(torch.ones(1)).dtype
    (torch.float32, torch.float32)
    """
    return projection.float() if projection.dtype == torch.float16 else projection


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


@dataclass(frozen=True)
class ProductForm:
    """The paper's form: cumulative products of ``k`` GELU branches, sigmoid gate.

    ``params = (W_1, b_1, ..., W_G, b_G, S_1, c_1, ..., S_G, c_G)``: for each
    group ``g`` the branch projection ``W_g [k W', d/G]`` and the gate
    projection ``S_g [k W', d/G]`` (biases may be None). ``G = 1`` is
    ``(W, b, S, c)``.
    """

    degree: int
    groups: int = 1
    name = "product"

    def state_dim(self, width):
        """Width of ``P(x)`` for branches ``width = D d`` wide in all."""
        return self.degree * width

    def activate(self, projection):
        """``P`` from the branch projection ``a = W x + b`` of one group (float32 for float16 ``a``)."""
        return cumulative_products(F.gelu(polynomial_input(projection)).chunk(self.degree, dim=-1))

    def _per_group(self, x, projections, fn):
        """``fn(x_g, W_g, b_g)`` for every group, concatenated on channels."""
        if self.groups == 1:
            return fn(x, *projections)
        slices = x.chunk(self.groups, dim=-1)
        return torch.cat([fn(x_g, w, b) for x_g, w, b in zip(slices, projections[0::2], projections[1::2])], dim=-1)

    def terms(self, x, params):
        """``P(x)``: ``[..., state_dim]``."""
        return self._per_group(x, params[: 2 * self.groups], lambda x_g, w, b: self.activate(F.linear(x_g, w, b)))

    def gate(self, x, params):
        """``s(x)``: ``[..., state_dim]``."""
        return self._per_group(x, params[2 * self.groups :], lambda x_g, w, b: torch.sigmoid(F.linear(x_g, w, b)))

    def terms_and_gate(self, x, params):
        """``(P(x), s(x))``."""
        return self.terms(x, params), self.gate(x, params)


@dataclass(frozen=True)
class PowerSeriesForm:
    """Upstream's compact form: ``P(x) = sum_p c_p a^p``, hardsigmoid gate.

    ``params = (W, b, C)``: one fused projection ``W [2 D d, d]`` whose first
    half gives ``a`` and second half the gate logits, and the coefficients
    ``C [k, D d]``.
    """

    degree: int
    name = "power_series"

    def state_dim(self, width):
        """Width of ``P(x)``: ``D d`` whatever the degree."""
        return width

    def _half(self, x, params, half):
        weight, bias, _ = params
        rows = weight.shape[0] // 2
        part = slice(0, rows) if half == 0 else slice(rows, 2 * rows)
        return F.linear(x, weight[part], None if bias is None else bias[part])

    def activate(self, projection, coefficients):
        """``P`` from ``W_a x + b_a`` (float32 for float16 input)."""
        a = torch.clamp(F.leaky_relu(polynomial_input(projection), 0.01), -0.1, 6.0)
        coefficients = coefficients.to(a.dtype)
        terms, power = coefficients[0] * a, a
        for p in range(1, self.degree):
            power = power * a
            terms = terms + coefficients[p] * power
        return terms

    def terms(self, x, params):
        """``P(x)``: ``[..., D d]``."""
        return self.activate(self._half(x, params, 0), params[2])

    def gate(self, x, params):
        """``s(x)``: ``[..., D d]``."""
        return F.hardsigmoid(self._half(x, params, 1))

    def terms_and_gate(self, x, params):
        """``(P(x), s(x))`` from one GEMM of the fused projection."""
        weight, bias, coefficients = params
        projection, gate_logits = F.linear(x, weight, bias).chunk(2, dim=-1)
        return self.activate(projection, coefficients), F.hardsigmoid(gate_logits)


@dataclass(frozen=True)
class TopOrderForm:
    """Selective PoM's form: only the top-order term ``ReLU(W x)^k``, sigmoid gate.

    ``params = (W, b, S, c)``: ``W, S [D d, d]``.
    """

    degree: int
    name = "top_order"

    def state_dim(self, width):
        """Width of ``P(x)``: ``D d``."""
        return width

    def terms(self, x, params):
        """``P(x)``: ``[..., D d]`` (float32 for a float16 projection)."""
        return F.relu(polynomial_input(F.linear(x, params[0], params[1]))).pow(self.degree)

    def gate(self, x, params):
        """``s(x)``: ``[..., D d]``."""
        return torch.sigmoid(F.linear(x, params[2], params[3]))

    def terms_and_gate(self, x, params):
        """``(P(x), s(x))``."""
        return self.terms(x, params), self.gate(x, params)
