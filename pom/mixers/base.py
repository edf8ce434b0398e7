"""The token-mixer protocol: what the encoder may ask of a mixer.

A token mixer maps frames to frames, ``y = mixer(x, padding_mask=None, **extras)``
with ``x, y: [B, T, d]`` and ``padding_mask: [B, T]`` True at padded frames,
such that valid outputs never depend on padded inputs:

.. math::

    y_t = \\mathrm{Mixer}(x)_t, \\qquad
    \\frac{\\partial y_t}{\\partial x_\\tau} = 0 \\text{ for every padded } \\tau .

:class:`TokenMixer` declares, with defaults, the capabilities the encoder reads
(which ``extras`` it passes, which modes it allows). Every mixer of
:mod:`pom.mixers` derives from it and overrides what it offers:

* ``needs_pos_embs`` (False): forward takes ``pos_embs=``, the relative
  position embeddings the encoder computes once;
* ``accepts_attn_mask`` (False): forward takes ``attn_mask=`` ``[T, T]``
  (True = blocked), so causal and chunk restrictions come as a mask;
* ``supports_dynamic_chunks`` (False): forward takes ``dynchunktrain_config=``
  (SpeechBrain's ``DynChunkTrainConfig``);
* ``causal`` (False): frame ``t`` reads frames ``<= t`` only;
* ``supports_streaming`` (False): :meth:`TokenMixer.forward_streaming` is
  implemented (the default raises a clear error).

A mixer given as any other ``nn.Module`` (e.g. a YAML ``!name:`` of the user's
own class) is read through :func:`mixer_protocol`, the one place that probes
a foreign module: its own attributes of these names count, the defaults
above fill the rest (``supports_streaming``: whether it has a
``forward_streaming`` method), and the module itself is used as it is.

Example
-------
>>> import torch
>>> class Mean(TokenMixer):
...     def forward(self, x, padding_mask=None):
...         return x.mean(dim=1, keepdim=True).expand_as(x)
>>> mixer_protocol(Mean())  # doctest: +NORMALIZE_WHITESPACE
MixerProtocol(needs_pos_embs=False, accepts_attn_mask=False, supports_dynamic_chunks=False,
              causal=False, supports_streaming=False)
>>> mixer_protocol(torch.nn.Identity()).causal
False
"""

from typing import NamedTuple

import torch.nn as nn


class MixerProtocol(NamedTuple):
    """The capabilities of one mixer, as the encoder reads them (see the module docstring)."""

    needs_pos_embs: bool
    accepts_attn_mask: bool
    supports_dynamic_chunks: bool
    causal: bool
    supports_streaming: bool


class TokenMixer(nn.Module):
    """Base class of the token mixers: the protocol's defaults and the
    streaming entry point. Subclasses implement ``forward(x, padding_mask=None, ...)``
    and override the class attributes of the capabilities they offer
    (``causal`` is usually set per instance from the ``causal`` option)."""

    #: forward takes ``pos_embs=`` (relative position embeddings from the encoder).
    needs_pos_embs = False
    #: forward takes ``attn_mask=`` ``[T, T]`` (True = blocked).
    accepts_attn_mask = False
    #: forward takes ``dynchunktrain_config=`` (SpeechBrain dynamic chunk training).
    supports_dynamic_chunks = False
    #: frame ``t`` reads frames ``<= t`` only.
    causal = False
    #: :meth:`forward_streaming` is implemented.
    supports_streaming = False

    def forward_bounded(self, x, chunk, **extras):
        """The mixer on one long unpadded sequence ``x`` ``[1, T, d]`` (inference): the
        numbers of ``forward(x)``, computed so that no intermediate wider than ``d`` grows
        with ``T`` where the mixer allows it (``chunk`` frames at a time). This default is
        ``forward`` itself; mixers with wide per-frame intermediates override it."""
        return self(x, padding_mask=None, **extras)

    def forward_streaming(self, x, state=None, padding_mask=None):
        """Processes the next chunk ``x`` ``[B, c, d]`` given the ``state`` returned
        for the previous chunks (None at the start); returns ``(y, state)``.
        Mixers that can stream override it (and set ``supports_streaming``)."""
        raise NotImplementedError(
            f"{type(self).__name__} has no streaming mode (it needs every frame at once); "
            "stream with a causal pom or summarymixing encoder"
        )


def mixer_protocol(mixer):
    """The :class:`MixerProtocol` of ``mixer``: a :class:`TokenMixer`'s attributes,
    or, for any other module, its attributes of the same names with
    :class:`TokenMixer`'s defaults (and ``supports_streaming`` when it has a
    ``forward_streaming`` method). The encoder reads it once, when it builds
    the layer around ``mixer``."""
    if isinstance(mixer, TokenMixer):
        return MixerProtocol(*(bool(getattr(mixer, name)) for name in MixerProtocol._fields))
    defaults = {name: getattr(TokenMixer, name) for name in MixerProtocol._fields}
    defaults["supports_streaming"] = callable(getattr(mixer, "forward_streaming", None))
    return MixerProtocol(*(bool(getattr(mixer, name, defaults[name])) for name in MixerProtocol._fields))
