"""Causal and chunked (streaming) PoM and SummaryMixing, alone and in the encoder."""

import pytest
import torch
from speechbrain.utils.dynamic_chunk_training import DynChunkTrainConfig

from pom.encoder import MixerConformerEncoder, MixerEncoder
from pom.mixers import MIXERS, FrequencyAwarePolynomialMixer, PolynomialMixer, SelectivePolynomialMixer, SummaryMixing

D = 16
STREAMABLE = {
    "pom": lambda **kw: PolynomialMixer(D, degree=3, expansion=2, **kw),
    "pom_power_series": lambda **kw: PolynomialMixer(D, degree=2, form="power_series", **kw),
    "pom_selective": lambda **kw: SelectivePolynomialMixer(D, **kw),
    "pom_frequency": lambda **kw: FrequencyAwarePolynomialMixer(D, groups=2, **kw),
    "summarymixing": lambda **kw: SummaryMixing(
        D, nhead=4, local_proj_hid_dim=[8], local_proj_out_dim=8, summary_hid_dim=[12], dropout=0.0, **kw
    ),
    "summarymixing_lite": lambda **kw: SummaryMixing(
        D, nhead=4, local_proj_hid_dim=[8], local_proj_out_dim=8, summary_hid_dim=[12], mode="lite", dropout=0.0, **kw
    ),
}
CHUNKS = [3, 1, 5, 4]


def test_every_streaming_mixer_is_tested():
    """Registered mixers that declare streaming (TokenMixer.supports_streaming) all have a case here."""
    streaming = {name for name, cls in MIXERS.items() if cls.supports_streaming}
    assert streaming, "no registered mixer streams"
    missing = sorted(streaming - set(STREAMABLE))
    assert not missing, f"streaming mixers without a case in tests/test_streaming.py STREAMABLE: {missing}"


def stream(step, x, sizes):
    state, outs, start = None, [], 0
    for size in sizes:
        out, state = step(x[:, start : start + size], state)
        outs.append(out)
        start += size
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("name", list(STREAMABLE))
def test_causal_streaming_equals_full_causal_pass(name):
    torch.manual_seed(0)
    mixer = STREAMABLE[name](causal=True).eval()
    x = torch.randn(2, sum(CHUNKS), D)
    with torch.no_grad():
        torch.testing.assert_close(stream(mixer.forward_streaming, x, CHUNKS), mixer(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(STREAMABLE))
def test_chunk_streaming_equals_dynamic_chunk_training_pass(name):
    """What a chunk-trained model saw in training is what it computes when streaming."""
    torch.manual_seed(0)
    mixer = STREAMABLE[name]().eval()
    x = torch.randn(2, 12, D)
    with torch.no_grad():
        trained = mixer(x, dynchunktrain_config=DynChunkTrainConfig(chunk_size=4))
        streamed = stream(mixer.forward_streaming, x, [4, 4, 4])
    torch.testing.assert_close(streamed, trained, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["pom", "summarymixing"])
def test_dynamic_chunks_respect_chunk_end_and_left_context(name):
    torch.manual_seed(0)
    mixer = STREAMABLE[name]().eval()
    config = DynChunkTrainConfig(chunk_size=3, left_context_size=1)
    x = torch.randn(1, 15, D)
    y = x.clone()
    y[:, :3] += 4.0  # chunk 0: outside the left context of chunk 2
    y[:, 9:] -= 4.0  # chunks 3-4: the future of chunk 2
    with torch.no_grad():
        a, b = mixer(x, dynchunktrain_config=config), mixer(y, dynchunktrain_config=config)
    torch.testing.assert_close(a[:, 6:9], b[:, 6:9], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a[:, 3:6], b[:, 3:6])  # chunk 1 sees chunk 0


@pytest.mark.parametrize(
    "mixer,options",
    [
        ("pom", {"degree": 2}),
        ("summarymixing", {"nhead": 4, "local_proj_hid_dim": [8], "local_proj_out_dim": 8, "summary_hid_dim": [12]}),
    ],
)
def test_causal_encoder_streaming_equals_full_pass(mixer, options):
    torch.manual_seed(0)
    enc = MixerEncoder(
        20,
        D,
        2,
        32,
        mixer=mixer,
        mixer_options=options,
        kernel_size=5,
        positional_encoding="fixed_abs_sine",
        causal=True,
    ).eval()
    feats = torch.randn(2, sum(CHUNKS), 20)
    with torch.no_grad():
        full = enc(feats)
        context = enc.make_streaming_context()
        parts, start = [], 0
        for size in CHUNKS:
            parts.append(enc.forward_streaming(feats[:, start : start + size], context))
            start += size
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)
    assert context["frames_seen"] == sum(CHUNKS)


@pytest.mark.parametrize("mixer", ["pom", "summarymixing", "relposmhaxl", "mha"])
def test_encoder_dynamic_chunk_training_limits_the_future(mixer):
    torch.manual_seed(0)
    enc = MixerConformerEncoder(
        2, D, 32, mixer=mixer, mixer_options={"nhead": 2} if "mha" in mixer or "relpos" in mixer else {}, kernel_size=3
    ).eval()
    config = DynChunkTrainConfig(chunk_size=4)
    x = torch.randn(1, 16, D)
    y = x.clone()
    y[:, 8:] += 3.0
    with torch.no_grad():
        a, _ = enc(x, dynchunktrain_config=config)
        b, _ = enc(y, dynchunktrain_config=config)
    torch.testing.assert_close(a[:, :8], b[:, :8], atol=1e-5, rtol=1e-5)


def test_unsupported_streaming_and_chunk_modes_are_refused_clearly():
    with pytest.raises(ValueError, match="Fastformer cannot be trained with dynamic chunks"):
        MixerConformerEncoder(1, D, 32, mixer="fastformer", mixer_options={"nhead": 2})(
            torch.randn(1, 8, D), dynchunktrain_config=DynChunkTrainConfig(chunk_size=4)
        )
    enc = MixerConformerEncoder(1, D, 32, mixer="pom", kernel_size=3)  # not causal
    with pytest.raises(ValueError, match="Streaming needs a causal encoder"):
        enc.forward_streaming(torch.randn(1, 4, D), enc.make_streaming_context())
    with pytest.raises(ValueError, match="takes no attention mask"):
        enc(torch.randn(1, 4, D), src_mask=torch.zeros(4, 4, dtype=torch.bool))
