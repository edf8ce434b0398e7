"""A Conformer encoder whose token mixer is chosen in YAML.

Each layer is SpeechBrain's pre-norm Conformer block (macaron feed-forwards,
convolution module, final LayerNorm) built from SpeechBrain's own pieces, with
the multi-head attention replaced by any mixer of :mod:`pom.mixers`
(:class:`pom.conformer_layer.MixerConformerLayer`, with its whole, streaming
and bounded-memory passes):

.. math::

    x &\\leftarrow x + \\tfrac12 \\mathrm{FFN}_1(x) \\\\
    x &\\leftarrow x + \\mathrm{Mixer}(\\mathrm{LN}(x), \\mathrm{pad}) \\\\
    x &\\leftarrow x + \\mathrm{Conv}(x, \\mathrm{pad}) \\\\
    x &\\leftarrow \\mathrm{LN}\\big(x + \\tfrac12 \\mathrm{FFN}_2(x)\\big)

:class:`MixerConformerEncoder` has the call and outputs of SpeechBrain's
``ConformerEncoder`` (``forward(src, src_mask, src_key_padding_mask, pos_embs,
dynchunktrain_config) -> (output, attention_list)``) and, with the
``relposmhaxl`` mixer, the same parameters under the same names but for
``mha_layer`` -> ``mixer.attention`` (see
:func:`convert_speechbrain_conformer_state_dict`). One deliberate difference:
padded frames are zeroed *before* the depthwise convolution, so valid frames
near the end of a short utterance never read padded frames (SpeechBrain only
zeroes the convolution's output). Without padding both give the same output.
The attention list holds ``None`` per layer: no ``[B, T, T]`` map is kept.

:class:`MixerEncoder` is the pre-training encoder body that sits after the CNN
front end: ``Linear(input_size, d_model)`` + dropout, optional absolute
sinusoidal positions, then :class:`MixerConformerEncoder`. It plays the role of
SpeechBrain's ``EncoderWrapper(TransformerASR(...))`` in the BEST-RQ recipe.

Example
-------
>>> import torch
>>> enc = MixerEncoder(input_size=40, d_model=32, num_layers=2, d_ffn=64,
...                    mixer="pom", mixer_options={"degree": 2, "expansion": 2},
...                    kernel_size=7, positional_encoding="fixed_abs_sine")
>>> enc(torch.randn(3, 20, 40), wav_lens=torch.tensor([1.0, 0.8, 0.5])).shape
torch.Size([3, 20, 32])
"""

import functools

import torch
import torch.nn as nn
from speechbrain.lobes.models.transformer.TransformerASR import make_transformer_src_mask
from speechbrain.nnet.activations import Swish
from speechbrain.nnet.normalization import LayerNorm

from pom.conformer_layer import CHUNK_FRAMES, MaskedConvolutionModule, MixerConformerLayer, time_chunks
from pom.mixers import build_mixer, lengths_to_padding_mask
from pom.mixers.attention import relative_position_encoder
from pom.positions import sinusoidal_positions

__all__ = [
    "MaskedConvolutionModule",
    "MixerConformerLayer",
    "MixerConformerEncoder",
    "MixerEncoder",
    "convert_speechbrain_conformer_state_dict",
]


def _mixer_factories(mixer, mixer_options, num_layers, causal):
    """Turns the YAML ``mixer`` value into one builder ``f(d_model)`` per layer."""
    options = dict(mixer_options or {})
    if causal:
        options.setdefault("causal", True)

    def one(spec, where):
        if isinstance(spec, str):
            return functools.partial(build_mixer, spec, **options)
        if isinstance(spec, nn.Module):
            return lambda d_model: spec
        if callable(spec):
            return lambda d_model: spec(d_model=d_model, **options)
        raise ValueError(
            f"{where}: expected a mixer name, a class or factory (YAML !name:), or a module; got {type(spec).__name__}"
        )

    if isinstance(mixer, (list, tuple)):
        if len(mixer) != num_layers:
            raise ValueError(f"mixer: a per-layer list must have num_layers={num_layers} entries, got {len(mixer)}")
        if len({id(m) for m in mixer if isinstance(m, nn.Module)}) < sum(isinstance(m, nn.Module) for m in mixer):
            raise ValueError("mixer: the same module instance appears twice in the per-layer list (shared weights)")
        return [one(spec, f"mixer[{i}]") for i, spec in enumerate(mixer)]
    if isinstance(mixer, nn.Module):
        if num_layers > 1:
            raise ValueError(
                "mixer: one module instance cannot serve several layers (its weights would be shared); "
                "give a mixer name, a class or factory (YAML !name:), or a per-layer list"
            )
        return [one(mixer, "mixer")]
    return [one(mixer, "mixer")] * num_layers


class MixerConformerEncoder(nn.Module):
    """Conformer encoder with a YAML-chosen token mixer; drop-in for SpeechBrain's ``ConformerEncoder``.

    Arguments
    ---------
    num_layers : int
        Number of Conformer blocks.
    d_model : int
        Feature size.
    d_ffn : int
        Feed-forward hidden size.
    mixer : str, callable, torch.nn.Module or list
        A registry name (see :data:`pom.mixers.MIXERS`), a class or ``!name:``
        factory called as ``f(d_model=..., **mixer_options)``, or a per-layer list.
    mixer_options : dict
        Keyword options of the mixer (e.g. ``{degree: 2, expansion: 2}``).
    kernel_size : int
        Depthwise convolution kernel size.
    activation : type
        Activation class.
    bias : bool
        Convolution biases.
    dropout : float
        Dropout.
    causal : bool
        Causal convolutions and (``causal=True`` is passed to) causal mixers.
    layerdrop_prob : float
        Probability of skipping a layer in training.
    output_hidden_states : bool
        Also return every layer's output, as SpeechBrain does.
    """

    def __init__(
        self,
        num_layers,
        d_model,
        d_ffn,
        mixer="relposmhaxl",
        mixer_options=None,
        kernel_size=31,
        activation=Swish,
        bias=True,
        dropout=0.0,
        causal=False,
        layerdrop_prob=0.0,
        output_hidden_states=False,
    ):
        super().__init__()
        factories = _mixer_factories(mixer, mixer_options, num_layers, causal)
        self.layers = nn.ModuleList(
            MixerConformerLayer(d_model, d_ffn, make(d_model), kernel_size, activation, bias, dropout, causal)
            for make in factories
        )
        self.norm = LayerNorm(d_model, eps=1e-6)
        self.layerdrop_prob = layerdrop_prob
        self.output_hidden_states = output_hidden_states
        self.uses_attention_masks = any(layer.protocol.accepts_attn_mask for layer in self.layers)
        needs_pos = any(layer.protocol.needs_pos_embs for layer in self.layers)
        self.pos_encoder = relative_position_encoder(d_model) if needs_pos else None

    def forward(self, src, src_mask=None, src_key_padding_mask=None, pos_embs=None, dynchunktrain_config=None):
        """``src`` ``[B, T, d_model]``, ``src_key_padding_mask`` ``[B, T]`` True at padded frames."""
        if pos_embs is None and self.pos_encoder is not None:
            pos_embs = self.pos_encoder(src)
        if dynchunktrain_config is not None and src_mask is None and self.uses_attention_masks:
            src_mask = make_transformer_src_mask(src, dynchunktrain_config=dynchunktrain_config)
        if self.training and self.layerdrop_prob > 0.0:
            keep = torch.rand(len(self.layers)) > self.layerdrop_prob
        else:
            keep = [True] * len(self.layers)
        output = src
        attention_lst, hidden_states = [], [src]
        for layer, kept in zip(self.layers, keep):
            if not kept:
                continue
            output, attention = layer(
                output,
                src_mask=src_mask,
                src_key_padding_mask=src_key_padding_mask,
                pos_embs=pos_embs,
                dynchunktrain_config=dynchunktrain_config,
            )
            attention_lst.append(attention)
            hidden_states.append(output)
        output = self.norm(output)
        if self.output_hidden_states:
            return output, attention_lst, hidden_states
        return output, attention_lst

    def forward_bounded(self, x, chunk=CHUNK_FRAMES):
        """Every layer and the final norm on one unpadded sequence ``x`` ``[1, T, d_model]``
        (modified in place) in bounded memory (:meth:`MixerConformerLayer.forward_bounded`)."""
        pos_embs = self.pos_encoder(x) if self.pos_encoder is not None else None
        for layer in self.layers:
            x = layer.forward_bounded(x, chunk, pos_embs)
        for a, b in time_chunks(x.shape[1], chunk):
            x[:, a:b] = self.norm(x[:, a:b])
        return x

    def make_streaming_context(self):
        """A fresh streaming context (one dict per layer) for :meth:`forward_streaming`."""
        return [{} for _ in self.layers]

    def forward_streaming(self, chunk, context):
        """Encodes the next chunk ``[B, c, d_model]`` of a stream with a causal
        encoder (``causal=True``, PoM or SummaryMixing mixers), carrying each
        layer's running mixer state and convolution cache in ``context``. The
        concatenated outputs equal :meth:`forward` on the whole stream."""
        for layer, layer_context in zip(self.layers, context):
            chunk = layer.forward_streaming(chunk, layer_context)
        return self.norm(chunk)


def convert_speechbrain_conformer_state_dict(state_dict):
    """Renames a SpeechBrain ``ConformerEncoder`` state dict (``mha_layer``) to
    :class:`MixerConformerEncoder` names (``mixer.attention``), so SpeechBrain
    checkpoints load into the ``relposmhaxl`` (or ``regularMHA``-free) encoder.

    Example
    -------
    >>> convert_speechbrain_conformer_state_dict({"layers.0.mha_layer.in_proj": 1})
    {'layers.0.mixer.attention.in_proj': 1}
    """
    return {k.replace(".mha_layer.", ".mixer.attention."): v for k, v in state_dict.items()}


class MixerEncoder(nn.Module):
    """Projection + positions + :class:`MixerConformerEncoder`: the body of a
    BEST-RQ / CTC encoder after SpeechBrain's CNN front end.

    Arguments
    ---------
    input_size : int
        Size of the incoming features (640 after the BEST-RQ CNN front end).
    d_model, num_layers, d_ffn, mixer, mixer_options, kernel_size, activation, dropout, causal, layerdrop_prob :
        As in :class:`MixerConformerEncoder` (``activation`` defaults to GELU, ``dropout`` to 0.1).
    positional_encoding : str or None
        ``"fixed_abs_sine"`` adds absolute sinusoidal positions to the projected
        input (the PoM authors' choice); ``None`` adds nothing (relative-position
        mixers bring their own).
    output_hidden_states : bool
        Off by default. When True, :meth:`forward` returns ``(output, hidden_states)``:
        ``hidden_states`` is a list of ``num_layers + 1`` tensors ``[B, T, d_model]``, the
        input of the first layer (projection + positions) then every layer's output (the
        last one before the final LayerNorm, which ``output`` has), as SpeechBrain's
        ``output_hidden_states``. In a SpeechBrain ``Sequential`` only ``output`` goes on.

    Example
    -------
    >>> enc = MixerEncoder(40, d_model=16, num_layers=3, d_ffn=32, mixer="pom", output_hidden_states=True)
    >>> out, hidden = enc(torch.randn(2, 9, 40), torch.tensor([1.0, 0.6]))
    >>> out.shape, len(hidden), hidden[-1].shape
    (torch.Size([2, 9, 16]), 4, torch.Size([2, 9, 16]))
    """

    POSITIONAL_ENCODINGS = (None, "fixed_abs_sine")

    def __init__(
        self, input_size, d_model, num_layers, d_ffn, mixer, mixer_options=None, kernel_size=31, activation=nn.GELU,
        dropout=0.1, positional_encoding=None, layerdrop_prob=0.0, causal=False, output_hidden_states=False,
    ):  # fmt: skip
        super().__init__()
        if positional_encoding not in self.POSITIONAL_ENCODINGS:
            raise ValueError(
                f"positional_encoding: unknown value '{positional_encoding}', "
                f"expected one of {self.POSITIONAL_ENCODINGS}"
            )
        self.d_model = d_model
        self.positional_encoding = positional_encoding
        self.input_projection = nn.Sequential(nn.Linear(input_size, d_model), nn.Dropout(dropout))
        self.encoder = MixerConformerEncoder(
            num_layers,
            d_model,
            d_ffn,
            mixer=mixer,
            mixer_options=mixer_options,
            kernel_size=kernel_size,
            activation=activation,
            dropout=dropout,
            causal=causal,
            layerdrop_prob=layerdrop_prob,
            output_hidden_states=output_hidden_states,
        )

    @property
    def output_hidden_states(self):
        """Whether :meth:`forward` also returns every layer's output (settable)."""
        return self.encoder.output_hidden_states

    @output_hidden_states.setter
    def output_hidden_states(self, value):
        self.encoder.output_hidden_states = bool(value)

    def forward(self, src, wav_lens=None, dynchunktrain_config=None, padding_mask=None):
        """``src`` ``[B, T, input_size]``, ``wav_lens`` relative lengths ``[B]`` (or ``padding_mask``
        ``[B, T]``, True at padded frames); returns ``[B, T, d_model]`` (and the list of layer outputs
        with ``output_hidden_states``)."""
        x = self.project(src)
        if padding_mask is None and wav_lens is not None:
            padding_mask = lengths_to_padding_mask(wav_lens.to(x.device), max_len=x.shape[1])
        out, _, *hidden = self.encoder(x, src_key_padding_mask=padding_mask, dynchunktrain_config=dynchunktrain_config)
        return (out, hidden[0]) if hidden else out

    def project(self, src, start=0):
        """The Conformer's input: the projection of ``src`` ``[B, T, input_size]`` (or the CNN's
        ``[B, T, channels, bins]``) plus the absolute positions of frames ``start ..``."""
        if src.dim() == 4:  # SpeechBrain's CNN front end may keep channels separate
            src = src.reshape(src.shape[0], src.shape[1], -1)
        x = self.input_projection(src)
        if self.positional_encoding == "fixed_abs_sine":
            x = x + sinusoidal_positions(x.shape[1], self.d_model, x.device, x.dtype, start=start)
        return x

    def forward_bounded(self, x, chunk=CHUNK_FRAMES):
        """The Conformer on one unpadded projected input ``x`` ``[1, T, d_model]`` (:meth:`project`),
        modified in place, in bounded memory (:meth:`MixerConformerEncoder.forward_bounded`)."""
        return self.encoder.forward_bounded(x, chunk)

    def forward_chunks(self, src, wav_lens, chunk_size, left_context_chunks=None):
        """The encoder run chunk by chunk (``chunk_size`` frames).

        A causal encoder really streams: chunks go through :meth:`forward_streaming`, which
        carries the mixers' running state and the convolution caches (the same numbers as
        :meth:`forward`). Any other encoder is evaluated with SpeechBrain's dynamic-chunk
        masks, which is what it would compute when fed chunk by chunk (frames see up to the
        end of their chunk and ``left_context_chunks`` chunks back).

        Example
        -------
        >>> enc = MixerEncoder(20, d_model=16, num_layers=1, d_ffn=32, mixer="pom", causal=True).eval()
        >>> src = torch.randn(1, 10, 20)
        >>> torch.allclose(enc.forward_chunks(src, torch.ones(1), chunk_size=3), enc(src), atol=1e-5)
        True
        """
        if getattr(self.encoder.layers[0].convolution_module, "causal", False):
            context = self.make_streaming_context()
            return torch.cat([self.forward_streaming(chunk, context) for chunk in src.split(chunk_size, dim=1)], dim=1)
        from speechbrain.utils.dynamic_chunk_training import DynChunkTrainConfig

        config = DynChunkTrainConfig(chunk_size=chunk_size, left_context_size=left_context_chunks)
        return self(src, wav_lens, dynchunktrain_config=config)

    def make_streaming_context(self):
        """A fresh streaming context for :meth:`forward_streaming`."""
        return {"frames_seen": 0, "layers": self.encoder.make_streaming_context()}

    def forward_streaming(self, chunk, context):
        """Encodes the next chunk ``[B, c, input_size]`` of a stream (causal
        encoders); absolute positions continue from the frames already seen."""
        x = self.project(chunk, start=context["frames_seen"])
        context["frames_seen"] += x.shape[1]
        return self.encoder.forward_streaming(x, context["layers"])
