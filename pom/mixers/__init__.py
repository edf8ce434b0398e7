"""Token mixers, all with one interface: the layers over :mod:`pom.ops`.

``mixer(x, padding_mask=None) -> y`` with ``x, y: [batch, time, d_model]`` and
``padding_mask: [batch, time]`` True at padded frames (SpeechBrain's convention).
Every mixer derives from :class:`~pom.mixers.base.TokenMixer`, which declares
what the encoder may ask of it (position embeddings, attention masks, dynamic
chunks, causality, streaming); :func:`~pom.mixers.base.mixer_protocol` reads
the same from any other module.

Pick one in YAML by registry name (``mixer: pom`` plus ``mixer_options``) or by
class (``mixer: !name:pom.mixers.PolynomialMixer``).

Example
-------
>>> import torch
>>> sorted(MIXERS)[:4]
['fastformer', 'hypermixing', 'mamba', 'mha']
>>> build_mixer("pom", d_model=8, degree=3)(torch.randn(1, 4, 8)).shape
torch.Size([1, 4, 8])
"""

from pom.mixers.attention import MultiHeadAttentionMixer, RelPosMHAXLMixer, RoPEMHAMixer
from pom.mixers.base import MixerProtocol, TokenMixer, mixer_protocol
from pom.mixers.fastformer import Fastformer
from pom.mixers.hypermixing import HyperMixingMixer
from pom.mixers.mamba import Mamba
from pom.mixers.polynomial import PolynomialMixer
from pom.mixers.polynomial_variants import FrequencyAwarePolynomialMixer, SelectivePolynomialMixer
from pom.mixers.summary_mixing import SummaryMixing
from pom.ops.masking import lengths_to_padding_mask, masked_mean

#: Registry of mixer names usable in YAML (``mixer: <name>``).
MIXERS = {
    "relposmhaxl": RelPosMHAXLMixer,
    "ropemha": RoPEMHAMixer,
    "mha": MultiHeadAttentionMixer,
    "summarymixing": SummaryMixing,
    "pom": PolynomialMixer,
    "pom_selective": SelectivePolynomialMixer,
    "pom_frequency": FrequencyAwarePolynomialMixer,
    "hypermixing": HyperMixingMixer,
    "fastformer": Fastformer,
    "mamba": Mamba,
}


def mixer_class(name):
    """Returns the mixer class registered under ``name`` (case-insensitive),
    with an error that lists the known names otherwise."""
    key = str(name).lower()
    if key not in MIXERS:
        raise ValueError(f"Unknown mixer '{name}'. Known mixers: {', '.join(sorted(MIXERS))}")
    return MIXERS[key]


def build_mixer(name, d_model, **options):
    """Builds the mixer registered under ``name`` for feature size ``d_model``."""
    cls = mixer_class(name)
    try:
        return cls(d_model, **options)
    except TypeError as err:
        raise ValueError(f"Mixer '{name}' ({cls.__name__}) rejected its options {options}: {err}") from None


__all__ = [
    "MIXERS",
    "build_mixer",
    "mixer_class",
    "TokenMixer",
    "MixerProtocol",
    "mixer_protocol",
    "masked_mean",
    "lengths_to_padding_mask",
    "PolynomialMixer",
    "SelectivePolynomialMixer",
    "FrequencyAwarePolynomialMixer",
    "SummaryMixing",
    "RelPosMHAXLMixer",
    "RoPEMHAMixer",
    "MultiHeadAttentionMixer",
    "HyperMixingMixer",
    "Fastformer",
    "Mamba",
]
