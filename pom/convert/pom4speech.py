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

from pom.convert.layout import CheckpointFormatError
from pom.convert.speechbrain_conformer import FIRST_LAYER, LAYER, SRC
from pom.positions import sinusoidal_positions

NAME = "pom4speech"
DESCRIPTION = "PoM authors' (pom4speech) BEST-RQ checkpoint"
#: ``attention_type`` of the authors' TransformerASR for these tensors.
ATTENTION_TYPE = "PoM"
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
