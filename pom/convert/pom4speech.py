"""The PoM authors' checkpoints (EvaJF/pom4speech: SpeechBrain 1.0.3 with ``attention_type: PoM``).

Each layer's ``mha_layer.mh_pom.{po_proj, se_proj, ag_proj}`` and
``mha_layer.layer_norm`` become our :class:`pom.mixers.PolynomialMixer`'s
``polynomial_proj``, ``selection_proj``, ``output_proj`` and ``norm`` (the same
equation, so the same output on unpadded input; on padded input ours averages
the valid frames only, theirs also the zeroed padded frames). The tensor shapes
give only the product of the degree ``k`` and the expansion ``D``: the run's
``hyperparams.yaml`` (``degree``, ``expand``) or the options tell them apart.

Example
-------
>>> matches(["1.transformer.encoder.layers.0.mha_layer.mh_pom.po_proj.weight"])
True

Authors
 * pom-speech contributors 2025
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from pom.convert.layout import CheckpointFormatError
from pom.convert.speechbrain_conformer import FIRST_LAYER, LAYER, SRC
from pom.positions import sinusoidal_positions

NAME = "pom4speech"
DESCRIPTION = "PoM authors' (pom4speech) BEST-RQ checkpoint"
#: ``attention_type`` of the authors' TransformerASR for these tensors.
ATTENTION_TYPE = "PoM"
#: SpeechBrain here has no PoM: the source model is built with regular MHA layers whose
#: ``mha_layer`` is then replaced by :func:`source_mixer` (:mod:`pom.convert.verify`).
SOURCE_ATTENTION = "regularMHA"
#: ``(theirs, ours)`` parts of the mixer's tensor names.
RENAMES = (
    (".mha_layer.mh_pom.po_proj.", ".mixer.polynomial_proj."),
    (".mha_layer.mh_pom.se_proj.", ".mixer.selection_proj."),
    (".mha_layer.mh_pom.ag_proj.", ".mixer.output_proj."),
    (".mha_layer.layer_norm.", ".mixer.norm."),
)
#: Remarks recorded in ``converted_from.json``.
NOTES = (
    "the authors' PoM averages padded (zeroed) frames too; ours averages valid frames only: "
    "the same outputs on unpadded input",
)


class SourcePoM(nn.Module):
    """The authors' PoM token mixer as their checkpoints hold it, written from the
    paper's equation with their tensor names and SpeechBrain's attention call:

    .. math::

        H = \\frac{1}{T} \\sum_{t} \\big[ h(a_{1,t}) \\,|\\, h(a_{1,t}) h(a_{2,t}) \\,|\\, \\dots \\big],
        \\quad a_t = \\mathrm{po\\_proj}(x_t), \\quad
        y_t = \\mathrm{LN}\\big(\\mathrm{ag\\_proj}(\\sigma(\\mathrm{se\\_proj}(x_t)) \\odot H)\\big)

    with ``h = GELU``; padded frames are zeroed and, as in their code, the mean
    runs over all ``T`` frames. Used to build the source model of a conversion.

    Example
    -------
    >>> mixer = SourcePoM(d_model=8, degree=2, expansion=1)
    >>> y, attention = mixer(torch.randn(2, 5, 8), None, None)
    >>> y.shape, attention
    (torch.Size([2, 5, 8]), None)
    """

    def __init__(self, d_model, degree, expansion, bias=True):
        super().__init__()
        width = degree * expansion * d_model
        self.degree = degree
        self.mh_pom = nn.Module()
        self.mh_pom.po_proj = nn.Linear(d_model, width, bias=bias)
        self.mh_pom.se_proj = nn.Linear(d_model, width, bias=bias)
        self.mh_pom.ag_proj = nn.Linear(width, d_model, bias=bias)
        self.layer_norm = nn.LayerNorm(d_model)

    def forward(self, query, key, value, attn_mask=None, key_padding_mask=None, pos_embs=None):
        x = query
        if key_padding_mask is not None:
            x = x * (~key_padding_mask).unsqueeze(-1).to(x.dtype)
        terms, product = [], None
        for branch in F.gelu(self.mh_pom.po_proj(x)).chunk(self.degree, dim=-1):
            product = branch if product is None else product * branch
            terms.append(product)
        state = torch.cat(terms, dim=-1).mean(dim=1, keepdim=True)
        return self.layer_norm(self.mh_pom.ag_proj(torch.sigmoid(self.mh_pom.se_proj(x)) * state)), None


def source_mixer(config):
    """The source model's token mixer for a converted PoM configuration."""
    options = config["mixer_options"]
    return SourcePoM(config["d_model"], options["degree"], options["expansion"], options.get("bias", True))


def matches(keys):
    """Whether the ``model.ckpt`` keys are those of the authors' PoM Conformer."""
    return any(LAYER.match(k) for k in keys) and any(".mha_layer.mh_pom." in k for k in keys)


def infer_mixer(state, inf, d_model, degree=None, expansion=None):
    """Sets ``mixer``, ``mixer_options`` (degree, expansion, bias) and
    ``positional_encoding`` in ``inf``; ``degree``/``expansion``: the options."""
    path = inf.model_path
    if inf.config["causal"]:
        raise CheckpointFormatError(
            f"{inf.hparams_path}: causal: True with the authors' PoM (which has no causal mode) "
            "cannot be reproduced here"
        )
    width = int(state[FIRST_LAYER + "mha_layer.mh_pom.po_proj.weight"].shape[0])
    if width % d_model:
        raise CheckpointFormatError(f"{path}: po_proj gives {width} values, not a multiple of d_model {d_model}")
    degree, expansion = _degree_and_expansion(width // d_model, inf, degree, expansion)
    options = {"degree": degree, "expansion": expansion}
    if FIRST_LAYER + "mha_layer.mh_pom.po_proj.bias" not in state:
        options["bias"] = False
    inf.config["mixer"], inf.origin["mixer"] = "pom", "tensor names"
    inf.config["mixer_options"] = options
    pe = state.get(SRC + "positional_encoding.pe")
    if pe is not None:
        n = min(int(pe.shape[1]), 256)
        if not torch.allclose(pe[0, :n].float(), sinusoidal_positions(n, d_model)[0], atol=1e-4):
            raise CheckpointFormatError(f"{path}: positional_encoding.pe is not the fixed sinusoidal table")
    inf.config["positional_encoding"] = "fixed_abs_sine" if pe is not None else None
    inf.origin["positional_encoding"] = "tensor names"


def _degree_and_expansion(product, inf, degree, expansion):
    """``k`` and ``D`` with ``k * D = product``: options, else hyperparams.yaml (``degree``, ``expand``)."""
    where = "options"
    if degree is None and expansion is None:
        degree, expansion, where = inf.hparams.get("degree"), inf.hparams.get("expand"), "hyperparams.yaml"
    if degree is None and expansion is None:
        raise CheckpointFormatError(
            f"{inf.model_path}: PoM degree and expansion cannot be told apart from the tensor shapes "
            f"(degree x expansion = {product}) and the run has no hyperparams.yaml: pass degree=K "
            "(python -m pom.convert ... --degree K)"
        )
    degree = int(degree) if degree is not None else product // int(expansion)
    expansion = int(expansion) if expansion is not None else product // degree
    if degree < 1 or expansion < 1 or degree * expansion != product:
        raise CheckpointFormatError(
            f"{inf.model_path}: degree {degree} x expansion {expansion} ({where}) != {product}, "
            "the width of po_proj divided by d_model"
        )
    inf.origin["degree/expansion"] = where
    return degree, expansion
