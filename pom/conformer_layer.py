"""One pre-norm Conformer block around any token mixer, and its passes.

SpeechBrain's Conformer layer (macaron feed-forwards, convolution module, final
LayerNorm) built from SpeechBrain's own pieces, with the multi-head attention
replaced by a mixer of :mod:`pom.mixers`:

.. math::

    x &\\leftarrow x + \\tfrac12 \\mathrm{FFN}_1(x) \\\\
    x &\\leftarrow x + \\mathrm{Mixer}(\\mathrm{LN}(x), \\mathrm{pad}) \\\\
    x &\\leftarrow x + \\mathrm{Conv}(x, \\mathrm{pad}) \\\\
    x &\\leftarrow \\mathrm{LN}\\big(x + \\tfrac12 \\mathrm{FFN}_2(x)\\big)

:class:`MixerConformerLayer` computes it three ways, all the same function:

* :meth:`~MixerConformerLayer.forward`: a padded batch (training and inference);
* :meth:`~MixerConformerLayer.forward_streaming`: the next chunk of a stream
  (causal layers), carrying the mixer state and the convolution cache;
* :meth:`~MixerConformerLayer.forward_bounded`: one long unpadded sequence in
  bounded memory: the per-frame modules ``chunk`` frames at a time, the
  convolution module in chunks with its halo, the mixer through its own
  :meth:`~pom.mixers.base.TokenMixer.forward_bounded`.

Example
-------
>>> import torch
>>> from pom.mixers import build_mixer
>>> layer = MixerConformerLayer(16, 32, build_mixer("pom", 16), kernel_size=5).eval()
>>> x = torch.randn(1, 23, 16)
>>> with torch.no_grad():
...     whole, _ = layer(x)
...     bounded = layer.forward_bounded(x.clone(), chunk=4)
>>> torch.allclose(whole, bounded, atol=1e-5)
True
"""

import torch
import torch.nn as nn
from speechbrain.lobes.models.transformer.Conformer import ConvolutionModule
from speechbrain.nnet.activations import Swish
from speechbrain.nnet.attention import PositionalwiseFeedForward
from speechbrain.nnet.normalization import LayerNorm

from pom.mixers import mixer_protocol

#: Frames per time chunk of the bounded pass (:meth:`MixerConformerLayer.forward_bounded`).
CHUNK_FRAMES = 2048


def time_chunks(frames, chunk):
    """``(start, end)`` of consecutive chunks of ``chunk`` frames covering ``frames`` frames.

    Example
    -------
    >>> list(time_chunks(5, 2))
    [(0, 2), (2, 4), (4, 5)]
    """
    return ((start, min(frames, start + chunk)) for start in range(0, frames, chunk))


def per_frame(module, x, chunk=CHUNK_FRAMES):
    """``module(x)`` of a module that works frame by frame, ``chunk`` frames at a time."""
    if x.shape[1] <= chunk:
        return module(x)
    return torch.cat([module(x[:, a:b]) for a, b in time_chunks(x.shape[1], chunk)], dim=1)


class MaskedConvolutionModule(ConvolutionModule):
    """SpeechBrain's Conformer ``ConvolutionModule`` that also zeroes padded
    frames before the depthwise convolution (same parameters, same names).

    Example
    -------
    >>> conv = MaskedConvolutionModule(8, kernel_size=3)
    >>> conv(torch.randn(2, 5, 8), torch.zeros(2, 5, 1, dtype=torch.bool)).shape
    torch.Size([2, 5, 8])
    """

    def forward(self, x, mask=None, dynchunktrain_config=None):
        """``mask`` is ``[B, T, 1]``, True at padded frames, as in SpeechBrain."""
        if mask is None or dynchunktrain_config is not None:
            return super().forward(x, mask, dynchunktrain_config=dynchunktrain_config)
        out = self.bottleneck(self.layer_norm(x).transpose(1, 2))
        out = out.masked_fill(mask.transpose(1, 2), 0.0)
        out = self.conv(out)
        if self.causal:
            out = out[..., : -self.padding]
        out = self.after_conv(out.transpose(1, 2))
        return out.masked_fill(mask, 0.0)

    def forward_streaming(self, x, cache=None):
        """Causal convolution of the next chunk ``x`` ``[B, c, d]`` given the last
        ``kernel_size - 1`` frames of the previous chunks (``cache``, None at the
        start); returns ``(out, cache)``. Equals the full causal pass."""
        if not self.causal or self.dilation != 1:
            raise ValueError("Streaming needs a causal encoder (causal=True) with dilation 1")
        out = self.bottleneck(self.layer_norm(x).transpose(1, 2))
        if cache is None:
            cache = out.new_zeros(out.shape[0], out.shape[1], self.kernel_size - 1)
        out = torch.cat([cache, out], dim=2)
        cache = out[..., out.shape[2] - (self.kernel_size - 1) :]
        out = nn.functional.conv1d(out, self.conv.weight, self.conv.bias, groups=self.conv.groups)
        return self.after_conv(out.transpose(1, 2)), cache

    def halo(self):
        """Frames on each side that an output frame may read: padding + ``kernel_size - 1``."""
        conv = self.conv
        return int(conv.padding[0]) + (int(conv.kernel_size[0]) - 1) * int(conv.dilation[0])


def _feed_forward(d_model, d_ffn, dropout, activation):
    return nn.Sequential(
        nn.LayerNorm(d_model),
        PositionalwiseFeedForward(d_ffn=d_ffn, input_size=d_model, dropout=dropout, activation=activation),
        nn.Dropout(dropout),
    )


class MixerConformerLayer(nn.Module):
    """One pre-norm Conformer block around a token mixer.

    Arguments
    ---------
    d_model : int
        Feature size.
    d_ffn : int
        Hidden size of the two feed-forward modules.
    mixer : torch.nn.Module
        The token mixer (``mixer(x, padding_mask)``); what the layer passes it
        and allows follows its :func:`~pom.mixers.base.mixer_protocol`.
    kernel_size : int
        Depthwise convolution kernel size.
    activation : type
        Activation class of the feed-forwards and the convolution module.
    bias : bool
        Biases in the convolution module.
    dropout : float
        Dropout of the feed-forwards and convolution module.
    causal : bool
        Causal convolution.
    """

    def __init__(self, d_model, d_ffn, mixer, kernel_size=31, activation=Swish, bias=True, dropout=0.0, causal=False):
        super().__init__()
        self.ffn_module1 = _feed_forward(d_model, d_ffn, dropout, activation)
        self.mixer = mixer
        self.protocol = mixer_protocol(mixer)
        self.convolution_module = MaskedConvolutionModule(
            d_model, kernel_size, bias, activation, dropout, causal=causal
        )
        self.ffn_module2 = _feed_forward(d_model, d_ffn, dropout, activation)
        self.norm1 = LayerNorm(d_model)
        self.norm2 = LayerNorm(d_model)

    def forward(self, x, src_mask=None, src_key_padding_mask=None, pos_embs=None, dynchunktrain_config=None):
        """Same call as SpeechBrain's ``ConformerEncoderLayer``; returns ``(x, None)``."""
        conv_mask = None if src_key_padding_mask is None else src_key_padding_mask.unsqueeze(-1)
        x = x + 0.5 * self.ffn_module1(x)
        x = x + self.mixer(
            self.norm1(x),
            padding_mask=src_key_padding_mask,
            **self._mixer_extras(src_mask, pos_embs, dynchunktrain_config),
        )
        x = x + self.convolution_module(x, conv_mask, dynchunktrain_config=dynchunktrain_config)
        x = self.norm2(x + 0.5 * self.ffn_module2(x))
        return x, None

    def _mixer_extras(self, src_mask, pos_embs, dynchunktrain_config):
        """What this layer's mixer needs besides ``(x, padding_mask)``, declared by its protocol."""
        protocol, extras = self.protocol, {}
        name = type(self.mixer).__name__
        if protocol.needs_pos_embs:
            extras["pos_embs"] = pos_embs
        if src_mask is not None:
            if not protocol.accepts_attn_mask:
                raise ValueError(
                    f"{name} takes no attention mask (src_mask); use causal=True or dynamic chunks instead"
                )
            extras["attn_mask"] = src_mask
        if dynchunktrain_config is not None:
            if protocol.supports_dynamic_chunks:
                extras["dynchunktrain_config"] = dynchunktrain_config
            elif not (protocol.accepts_attn_mask or protocol.causal):
                raise ValueError(
                    f"{name} cannot be trained with dynamic chunks (it has no chunked or causal mode); "
                    "use pom, summarymixing, an attention mixer or a causal mixer"
                )
        return extras

    def forward_streaming(self, x, context):
        """Next chunk through a causal layer; ``context`` (a dict, updated in
        place) carries the mixer state and the convolution cache."""
        if not self.protocol.supports_streaming:
            raise ValueError(f"{type(self.mixer).__name__} has no streaming mode; use pom or summarymixing")
        x = x + 0.5 * self.ffn_module1(x)
        mixed, context["mixer"] = self.mixer.forward_streaming(self.norm1(x), context.get("mixer"))
        x = x + mixed
        conv, context["conv"] = self.convolution_module.forward_streaming(x, context.get("conv"))
        x = x + conv
        return self.norm2(x + 0.5 * self.ffn_module2(x))

    def forward_bounded(self, x, chunk=CHUNK_FRAMES, pos_embs=None):
        """The layer on one unpadded sequence ``x`` ``[1, T, d]``, modified in place, in
        bounded memory (inference, no autograd): per-frame modules ``chunk`` frames at a
        time, the convolution module in chunks with a halo of its padding + ``kernel_size - 1``
        frames, the mixer over the whole sequence (:meth:`TokenMixer.forward_bounded`). The
        numbers of :meth:`forward` to float rounding, with a few ``[T, d]`` tensors alive."""
        frames = x.shape[1]
        for a, b in time_chunks(frames, chunk):
            part = x[:, a:b]
            part += 0.5 * self.ffn_module1(part)
        extras = {"pos_embs": pos_embs} if self.protocol.needs_pos_embs else {}
        if hasattr(self.mixer, "forward_bounded"):
            mixed = self.mixer.forward_bounded(per_frame(self.norm1, x, chunk), chunk, **extras)
        else:  # a foreign module: its own forward
            mixed = self.mixer(per_frame(self.norm1, x, chunk), padding_mask=None, **extras)
        x += mixed
        del mixed
        conv, halo = torch.empty_like(x), self.convolution_module.halo()
        for a, b in time_chunks(frames, chunk):
            start, end = max(0, a - halo), min(frames, b + halo)
            conv[:, a:b] = self.convolution_module(x[:, start:end])[:, a - start : b - start]
        x += conv
        del conv
        for a, b in time_chunks(frames, chunk):
            part = x[:, a:b]
            part.copy_(self.norm2(part + 0.5 * self.ffn_module2(part)))
        return x
