"""pom-speech: efficient token mixers (PoM, SummaryMixing, MHA) for SpeechBrain Conformers.

The package is small on purpose: one module per idea.

* :mod:`pom.mixers`   -- the token mixers, all called as ``mixer(x, padding_mask=None)``.
* :mod:`pom.encoder`  -- a Conformer encoder built from SpeechBrain blocks that takes any mixer.
* :mod:`pom.data`     -- LibriSpeech preparation and a synthetic LibriSpeech-layout corpus.
"""

__version__ = "0.1.0"
