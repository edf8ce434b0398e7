"""SpeechBrain's BEST-RQ checkpoints: a ``RelPosMHAXL`` Conformer.

A run of SpeechBrain's recipe (``recipes/LibriSpeech/self-supervised-learning/BEST-RQ``,
SpeechBrain 1.x) saves ``[CNN, EncoderWrapper(TransformerASR)]``; its layers
become our ``relposmhaxl`` mixer, the number of heads read from ``pos_bias_u``.

Example
-------
>>> matches(["1.transformer.encoder.layers.0.mha_layer.pos_bias_u"])
True

Authors
 * pom-speech contributors 2025
"""

from pom.convert.layout import CheckpointFormatError
from pom.convert.speechbrain_conformer import DEFAULTS, FIRST_LAYER, LAYER

NAME = "speechbrain_bestrq"
DESCRIPTION = "SpeechBrain BEST-RQ checkpoint (RelPosMHAXL Conformer)"
#: ``attention_type`` of SpeechBrain's TransformerASR for these tensors.
ATTENTION_TYPE = "RelPosMHAXL"
#: The ``attention_type`` that builds the source model (:mod:`pom.convert.verify`), and no mixer to replace.
SOURCE_ATTENTION, source_mixer = ATTENTION_TYPE, None
#: Our RelPosMHAXL mixer keeps SpeechBrain's tensor names.
RENAMES = ()
#: Remarks recorded in ``converted_from.json``.
NOTES = ()


def matches(keys):
    """Whether the ``model.ckpt`` keys are those of a SpeechBrain RelPosMHAXL Conformer."""
    return any(LAYER.match(k) for k in keys) and any(k.endswith(".mha_layer.pos_bias_u") for k in keys)


def infer_mixer(state, inf, d_model, degree=None, expansion=None):
    """Sets ``mixer``, ``mixer_options`` (heads, dropout) and ``positional_encoding``
    in ``inf`` (``degree``, ``expansion``: PoM options, not used here)."""
    del degree, expansion
    bias_u = state[FIRST_LAYER + "mha_layer.pos_bias_u"]  # [head_dim, nhead]
    nhead = int(bias_u.shape[1])
    if int(bias_u.shape[0]) * nhead != d_model:
        raise CheckpointFormatError(
            f"{inf.model_path}: pos_bias_u {tuple(bias_u.shape)} does not fit d_model {d_model}"
        )
    inf.shape("nhead", nhead)
    dropout = inf.setting("dropout", default=DEFAULTS["dropout"])
    inf.config["mixer"], inf.origin["mixer"] = "relposmhaxl", "tensor names"
    inf.config["mixer_options"] = {"nhead": nhead, "dropout": dropout}
    inf.config["positional_encoding"] = None  # RelPosMHAXL brings its own relative positions
