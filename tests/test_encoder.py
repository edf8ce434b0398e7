"""The mixer Conformer encoder: SpeechBrain equivalence, padding, YAML selection."""

import pytest
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.lobes.models.transformer.Conformer import ConformerEncoder
from speechbrain.lobes.models.transformer.TransformerASR import make_transformer_src_mask
from speechbrain.nnet.attention import RelPosEncXL
from speechbrain.utils.dynamic_chunk_training import DynChunkTrainConfig

from pom.encoder import MixerConformerEncoder, MixerEncoder, convert_speechbrain_conformer_state_dict
from pom.mixers import MIXERS, PolynomialMixer, RelPosMHAXLMixer

D, FFN, LAYERS = 32, 64, 2
MIXER_OPTIONS = {
    "relposmhaxl": {"nhead": 4},
    "ropemha": {"nhead": 4},
    "mha": {"nhead": 4},
    "summarymixing": {"nhead": 4, "local_proj_hid_dim": [16], "local_proj_out_dim": 16, "summary_hid_dim": [32]},
    "pom": {"degree": 2, "expansion": 2},
    "pom_selective": {"degree": 3, "expansion": 2},
    "pom_frequency": {"groups": 2},
    "hypermixing": {"hypernet_size": 32, "nhead": 2},
    "fastformer": {"nhead": 4},
    "mamba": {"d_state": 4},
}


def test_every_registered_mixer_runs_in_the_encoder_tests():
    missing = sorted(set(MIXERS) - set(MIXER_OPTIONS))
    assert not missing, f"registered mixers without options in tests/test_encoder.py MIXER_OPTIONS: {missing}"


def sb_and_ours(kernel_size=7):
    torch.manual_seed(0)
    sb = ConformerEncoder(LAYERS, D, FFN, nhead=4, kernel_size=kernel_size, attention_type="RelPosMHAXL", dropout=0.1)
    ours = MixerConformerEncoder(
        LAYERS, D, FFN, mixer="relposmhaxl", mixer_options={"nhead": 4}, kernel_size=kernel_size, dropout=0.1
    )
    missing = ours.load_state_dict(convert_speechbrain_conformer_state_dict(sb.state_dict()), strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys
    return sb.eval(), ours.eval()


def test_same_output_as_speechbrain_conformer_encoder():
    sb, ours = sb_and_ours()
    x = torch.randn(3, 25, D)
    pos = RelPosEncXL(D)(x)
    with torch.no_grad():
        ref, sb_attn = sb(x, pos_embs=pos)
        out, attn = ours(x, pos_embs=pos)
        out_own_pos, _ = ours(x)  # the encoder builds the same embeddings itself
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_own_pos, ref, atol=1e-5, rtol=1e-5)
    assert len(attn) == len(sb_attn) == LAYERS and all(a is None for a in attn)


def test_same_output_as_speechbrain_conformer_encoder_with_rope_attention():
    """SpeechBrain's ConformerEncoder(attention_type="RoPEMHA") and ours with `ropemha`, same weights."""
    torch.manual_seed(0)
    sb = ConformerEncoder(LAYERS, D, FFN, nhead=4, kernel_size=7, attention_type="RoPEMHA", dropout=0.1).eval()
    ours = MixerConformerEncoder(
        LAYERS, D, FFN, mixer="ropemha", mixer_options={"nhead": 4}, kernel_size=7, dropout=0.1
    )
    result = ours.load_state_dict(convert_speechbrain_conformer_state_dict(sb.state_dict()), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    ours.eval()
    x = torch.randn(3, 25, D)
    config = DynChunkTrainConfig(chunk_size=4, left_context_size=2)
    chunk_mask = make_transformer_src_mask(x, dynchunktrain_config=config)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], sb(x)[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            ours(x, dynchunktrain_config=config)[0],  # our encoder builds the chunk mask itself
            sb(x, src_mask=chunk_mask, dynchunktrain_config=config)[0],
            atol=1e-5,
            rtol=1e-5,
        )


def test_padding_does_not_leak_through_the_convolution_unlike_speechbrain():
    """SpeechBrain zeroes the convolution output only; we zero its input too."""
    sb, ours = sb_and_ours()
    short = torch.randn(1, 12, D)
    batch = torch.cat([short, 30 * torch.randn(1, 8, D)], dim=1)
    batch = torch.cat([batch, torch.randn(1, 20, D)], dim=0)
    pad = torch.zeros(2, 20, dtype=torch.bool)
    pad[0, 12:] = True
    with torch.no_grad():
        alone, _ = ours(short)
        in_batch, _ = ours(batch, src_key_padding_mask=pad)
        sb_alone, _ = sb(short, pos_embs=RelPosEncXL(D)(short))
        sb_batch, _ = sb(batch, src_key_padding_mask=pad, pos_embs=RelPosEncXL(D)(batch))
    torch.testing.assert_close(in_batch[:1, :12], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone, sb_alone, atol=1e-5, rtol=1e-5)
    assert (sb_batch[:1, :12] - sb_alone).abs().max() > 1e-3


@pytest.mark.parametrize("name", list(MIXER_OPTIONS))
def test_full_encoder_padding_invariance_and_gradients(name):
    torch.manual_seed(0)
    enc = MixerEncoder(
        40,
        D,
        LAYERS,
        FFN,
        mixer=name,
        mixer_options=MIXER_OPTIONS[name],
        kernel_size=7,
        positional_encoding=None if name in ("relposmhaxl", "ropemha") else "fixed_abs_sine",
    ).eval()
    short = torch.randn(1, 10, 40)
    batch = torch.cat([torch.cat([short, 20 * torch.randn(1, 6, 40)], dim=1), torch.randn(1, 16, 40)], dim=0)
    with torch.no_grad():
        alone = enc(short)
        in_batch = enc(batch, wav_lens=torch.tensor([10 / 16, 1.0]))
    torch.testing.assert_close(in_batch[:1, :10], alone, atol=1e-5, rtol=1e-5)

    enc.train()
    enc(batch, wav_lens=torch.tensor([10 / 16, 1.0]))[0, :10].pow(2).sum().backward()
    for pname, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: no gradient for {pname}"


def test_mixer_from_yaml_and_per_layer_list():
    yaml = """
d_model: 16
pom: !name:pom.mixers.PolynomialMixer
    degree: 3
    expansion: 1
attention: !name:pom.mixers.RelPosMHAXLMixer
    nhead: 2
encoder: !new:pom.encoder.MixerConformerEncoder
    num_layers: 3
    d_model: !ref <d_model>
    d_ffn: 32
    kernel_size: 3
    mixer: [!ref <attention>, !ref <pom>, !ref <pom>]
"""
    enc = load_hyperpyyaml(yaml)["encoder"]
    kinds = [type(layer.mixer) for layer in enc.layers]
    assert kinds == [RelPosMHAXLMixer, PolynomialMixer, PolynomialMixer]
    assert enc.layers[1].mixer.degree == 3
    assert enc.layers[1].mixer is not enc.layers[2].mixer
    out, _ = enc(torch.randn(2, 9, 16))
    assert out.shape == (2, 9, 16)


def test_encoder_configuration_errors_are_clear():
    with pytest.raises(ValueError, match="Unknown mixer 'hyena'. Known mixers: .*pom"):
        MixerConformerEncoder(2, D, FFN, mixer="hyena")
    with pytest.raises(ValueError, match="num_layers=2 entries, got 1"):
        MixerConformerEncoder(2, D, FFN, mixer=["pom"])
    with pytest.raises(ValueError, match="weights would be shared"):
        MixerConformerEncoder(2, D, FFN, mixer=PolynomialMixer(D))
    with pytest.raises(ValueError, match="positional_encoding"):
        MixerEncoder(40, D, 2, FFN, mixer="pom", positional_encoding="rope")


def test_causal_encoder_never_reads_the_future():
    torch.manual_seed(0)
    enc = MixerConformerEncoder(2, D, FFN, mixer="pom", kernel_size=5, causal=True).eval()
    x = torch.randn(1, 12, D)
    y = x.clone()
    y[:, 8:] += 3.0
    with torch.no_grad():
        torch.testing.assert_close(enc(x)[0][:, :8], enc(y)[0][:, :8], atol=1e-5, rtol=1e-5)


class ForeignMixer(torch.nn.Module):
    """A user's mixer that knows nothing of pom.mixers.base.TokenMixer: a masked mean."""

    def __init__(self, d_model):
        super().__init__()
        self.proj = torch.nn.Linear(d_model, d_model)

    def forward(self, x, padding_mask=None):
        valid = torch.ones(x.shape[:2], dtype=x.dtype) if padding_mask is None else (~padding_mask).to(x.dtype)
        mean = (self.proj(x) * valid.unsqueeze(-1)).sum(1, keepdim=True) / valid.sum(1).view(-1, 1, 1)
        return mean.expand_as(x)


def test_a_foreign_module_works_as_a_mixer_with_the_protocol_defaults():
    """Any nn.Module (YAML !name:) is used as it is; what it did not declare is refused clearly."""
    torch.manual_seed(0)
    enc = MixerConformerEncoder(2, D, FFN, mixer=ForeignMixer, kernel_size=3).eval()
    assert isinstance(enc.layers[0].mixer, ForeignMixer) and enc.pos_encoder is None
    short = torch.randn(1, 6, D)
    batch = torch.cat([torch.cat([short, 9 * torch.randn(1, 3, D)], dim=1), torch.randn(1, 9, D)])
    pad = torch.zeros(2, 9, dtype=torch.bool)
    pad[0, 6:] = True
    with torch.no_grad():
        torch.testing.assert_close(enc(batch, src_key_padding_mask=pad)[0][:1, :6], enc(short)[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="ForeignMixer cannot be trained with dynamic chunks"):
        enc(batch, dynchunktrain_config=DynChunkTrainConfig(chunk_size=4))
    with pytest.raises(ValueError, match="ForeignMixer takes no attention mask"):
        enc(batch, src_mask=torch.zeros(9, 9, dtype=torch.bool))
    with pytest.raises(ValueError, match="ForeignMixer has no streaming mode"):
        enc.forward_streaming(short, enc.make_streaming_context())
