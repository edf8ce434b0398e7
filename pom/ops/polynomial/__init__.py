"""PoM's computations as ops on tensors (never on a mixer object).

One module per job, imported in one direction (``fused`` imports ``chunked``;
the mixing ops import ``forms``, ``readout`` and :mod:`pom.ops.masking`):

* :mod:`~pom.ops.polynomial.forms`: the per-frame expansions ``P(x)`` and
  gates ``s(x)`` (product, power series, top order), written once;
* :mod:`~pom.ops.polynomial.readout`: ``W_o (s * H) + b_o``, as written and
  with ``H`` folded into ``W_o`` (one batched GEMM, no gated tensor);
* :mod:`~pom.ops.polynomial.reference`: the mixing in plain PyTorch (global,
  causal, chunk-streaming) and the product state, the twins of the fast ops;
* :mod:`~pom.ops.polynomial.chunked`: the same mixing chunk by chunk over
  time, without the wide intermediates (custom autograd);
* :mod:`~pom.ops.polynomial.fused`: the product form's state in Triton
  kernels, the chunked op elsewhere.

The mixing ops share one signature (:func:`polynomial_mixing_op` gives the
op of an implementation name; each module's ``supports(form)`` says which
forms it computes)::

    z = polynomial_mixing(x, form, params, out_weight, out_bias, padding_mask=None,
                          causal=False, dropout_p=0.0)  # chunked, fused: + chunk_size=

.. math::

    z_t = W_o \\, \\mathrm{dropout}\\big(s(x_t) \\odot H\\big) + b_o, \\qquad
    H = \\tfrac{1}{|V|} \\textstyle\\sum_{\\tau \\in V} P(x_\\tau)

Example
-------
>>> import torch
>>> from pom.ops.polynomial.forms import TopOrderForm
>>> form = TopOrderForm(degree=2)
>>> x, params = torch.randn(1, 6, 4), (torch.randn(4, 4), None, torch.randn(4, 4), None)
>>> plain, chunked = (polynomial_mixing_op(name, form) for name in ("plain", "chunked"))
>>> y_plain = plain(x, form, params, torch.eye(4))
>>> torch.allclose(y_plain, chunked(x, form, params, torch.eye(4), chunk_size=4), atol=1e-5)
True
"""

import importlib

#: Implementation name -> module holding its ``polynomial_mixing`` op.
IMPLEMENTATIONS = {"plain": "reference", "chunked": "chunked", "fused": "fused"}


def polynomial_mixing_op(implementation, form):
    """The ``polynomial_mixing`` op of ``implementation`` (``"plain"``,
    ``"chunked"`` or ``"fused"``), checked to compute ``form`` (a ValueError
    otherwise). The fused module, which imports Triton, is loaded only when
    asked for."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"unknown implementation '{implementation}', expected one of {tuple(IMPLEMENTATIONS)}")
    module = importlib.import_module(f"pom.ops.polynomial.{IMPLEMENTATIONS[implementation]}")
    if not module.supports(form):
        raise ValueError(f"implementation='{implementation}' is for {module.SUPPORTED_FORMS}, not form='{form.name}'")
    return module.polynomial_mixing
