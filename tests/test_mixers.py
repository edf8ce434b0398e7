"""Behaviour of every token mixer behind the common interface (CPU)."""

import pytest
import torch

from pom.mixers import (
    MIXERS,
    FrequencyAwarePolynomialMixer,
    PolynomialMixer,
    SelectivePolynomialMixer,
    SummaryMixing,
    TokenMixer,
    build_mixer,
    masked_mean,
    mixer_protocol,
)

D = 24

# case -> (registry name, options): a small instance of every mixer and mode we ship,
# built through the registry; test_every_registered_mixer_has_a_factory keeps it complete
FACTORIES = {
    "pom": ("pom", dict(degree=2, expansion=2)),
    "pom_k3": ("pom", dict(degree=3, expansion=1)),
    "pom_power_series": ("pom", dict(degree=3, expansion=2, form="power_series")),
    "pom_selective": ("pom_selective", dict(degree=3, expansion=2)),
    "pom_frequency2": ("pom_frequency", dict(groups=2)),
    "pom_frequency3": ("pom_frequency", dict(groups=3)),
    "summarymixing": (
        "summarymixing",
        dict(nhead=4, local_proj_hid_dim=[16], local_proj_out_dim=16, summary_hid_dim=[32]),
    ),
    "summarymixing_lite": ("summarymixing", dict(nhead=4, summary_hid_dim=[32], mode="lite")),
    "summarymixing_fast": ("summarymixing", dict(nhead=4, local_proj_out_dim=16, mode="fast")),
    "summarymixing_deep": (
        "summarymixing",
        dict(nhead=2, local_proj_hid_dim=[16, 8], local_proj_out_dim=16, summary_hid_dim=[32, 16]),
    ),
    "summarymixing_one_head": (
        "summarymixing",
        dict(nhead=1, local_proj_hid_dim=[16], local_proj_out_dim=16, summary_hid_dim=[32]),
    ),
    "relposmhaxl": ("relposmhaxl", dict(nhead=4)),
    "ropemha": ("ropemha", dict(nhead=4)),
    "mha": ("mha", dict(nhead=4)),
    "hypermixing": ("hypermixing", dict(hypernet_size=32, nhead=2)),
    "fastformer": ("fastformer", dict(nhead=4)),
    "mamba": ("mamba", dict(d_state=4)),
    "mamba_causal": ("mamba", dict(d_state=4, bidirectional=False)),
}
# mixers whose output does not depend on frame order (no positions, no recurrence)
ORDER_FREE = [n for n in FACTORIES if n.startswith(("pom", "summarymixing"))] + ["fastformer"]
NO_CAUSAL_MODE = ["relposmhaxl", "hypermixing", "fastformer"]
# SpeechBrain's own modules support bf16 through autocast only
AUTOCAST_ONLY = ["relposmhaxl", "hypermixing"]


def make(name, **kw):
    torch.manual_seed(0)
    registry_name, options = FACTORIES[name]
    return build_mixer(registry_name, D, **options, **kw).eval()


def test_every_registered_mixer_has_a_factory():
    """Every test here runs over FACTORIES: a mixer added to pom.mixers.MIXERS must get a case."""
    missing = sorted(set(MIXERS) - {registry_name for registry_name, _ in FACTORIES.values()})
    assert not missing, f"registered mixers without a case in tests/test_mixers.py FACTORIES: {missing}"


@pytest.mark.parametrize("name", sorted(MIXERS))
def test_every_registered_mixer_declares_the_protocol(name):
    """Each mixer derives from TokenMixer; it streams exactly when it says so."""
    cls = MIXERS[name]
    assert issubclass(cls, TokenMixer), f"{cls.__name__} does not derive from pom.mixers.base.TokenMixer"
    overrides_streaming = cls.forward_streaming is not TokenMixer.forward_streaming
    assert cls.supports_streaming == overrides_streaming, (
        f"{cls.__name__}: supports_streaming disagrees with forward_streaming"
    )
    if not cls.supports_streaming:
        case = next(case for case, (registry_name, _) in FACTORIES.items() if registry_name == name)
        with pytest.raises(NotImplementedError, match="has no streaming mode"):
            make(case).forward_streaming(torch.randn(1, 3, D))


def test_protocol_of_foreign_modules_uses_the_defaults():
    """A mixer given as any nn.Module (YAML !name: of the user's class) is read with TokenMixer's defaults."""

    class Foreign(torch.nn.Module):
        causal = True

        def forward(self, x, padding_mask=None):
            return x

        def forward_streaming(self, x, state=None, padding_mask=None):
            return x, state

    protocol = mixer_protocol(Foreign())
    assert protocol.causal and protocol.supports_streaming
    assert not (protocol.needs_pos_embs or protocol.accepts_attn_mask or protocol.supports_dynamic_chunks)
    assert mixer_protocol(torch.nn.Identity()) == mixer_protocol(TokenMixer())
    assert mixer_protocol(make("relposmhaxl", causal=True))[:2] == (True, True)
    assert mixer_protocol(make("pom", causal=True)).causal


def padded_pair(t_short=7, t_long=12, garbage=50.0):
    """A short utterance alone, and the same one padded (with garbage) in a batch."""
    torch.manual_seed(1)
    short = torch.randn(1, t_short, D)
    long = torch.randn(1, t_long, D)
    filler = garbage * torch.randn(1, t_long - t_short, D)
    batch = torch.cat([torch.cat([short, filler], dim=1), long], dim=0)
    pad = torch.zeros(2, t_long, dtype=torch.bool)
    pad[0, t_short:] = True
    return short, batch, pad


@pytest.mark.parametrize("name", list(FACTORIES))
def test_shape_and_gradients_reach_every_parameter(name):
    mixer = make(name).train()
    _, batch, pad = padded_pair()
    batch.requires_grad_(True)
    out = mixer(batch, pad)
    assert out.shape == batch.shape
    (out[~pad] ** 2).sum().backward()
    for pname, p in mixer.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient for {pname}"
    assert batch.grad[0, 7:].abs().sum() == 0, f"{name}: gradient flows into padded frames"


@pytest.mark.parametrize("name", list(FACTORIES))
def test_padding_invariance(name):
    """Padded frames (filled with large garbage) never change valid outputs."""
    mixer = make(name)
    short, batch, pad = padded_pair()
    with torch.no_grad():
        alone = mixer(short)
        in_batch = mixer(batch, pad)[:1, : short.shape[1]]
    torch.testing.assert_close(in_batch, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", [n for n in FACTORIES if n not in NO_CAUSAL_MODE])
def test_causal_mode_never_reads_the_future(name):
    mixer = make(name, causal=True)
    torch.manual_seed(2)
    x = torch.randn(2, 10, D)
    y = x.clone()
    y[:, 6:] = 10 * torch.randn(2, 4, D)
    with torch.no_grad():
        torch.testing.assert_close(mixer(x)[:, :6], mixer(y)[:, :6], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(mixer(x)[:, 6:], mixer(y)[:, 6:])


def test_relposmhaxl_causal_never_reads_the_future():
    mixer = make("relposmhaxl", causal=True)
    x = torch.randn(1, 9, D)
    y = x.clone()
    y[:, 5:] += 5.0
    with torch.no_grad():
        torch.testing.assert_close(mixer(x)[:, :5], mixer(y)[:, :5], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_eval_mode_is_deterministic(name):
    mixer = make(name)
    x = torch.randn(2, 9, D)
    with torch.no_grad():
        assert torch.equal(mixer(x), mixer(x))


def _assert_bf16_close(name, out, ref, valid):
    assert torch.isfinite(out[valid]).all()
    err = (out.float() - ref)[valid].abs().max().item()
    assert err < 0.1 * ref[valid].abs().max().item() + 0.05, f"{name}: bf16 error {err}"


@pytest.mark.parametrize("name", list(FACTORIES))
def test_bfloat16_autocast_on_cpu_matches_float32(name):
    """What the recipes run (SpeechBrain's precision=bf16 is autocast)."""
    mixer = make(name)
    _, batch, pad = padded_pair(garbage=1.0)
    with torch.no_grad():
        ref = mixer(batch, pad)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = mixer(batch, pad)
    _assert_bf16_close(name, out, ref, ~pad)


@pytest.mark.parametrize("name", [n for n in FACTORIES if n not in AUTOCAST_ONLY])
def test_bfloat16_weights_on_cpu_match_float32(name):
    """Pure bf16 modules (SpeechBrain's RelPosMHAXL and HyperMixing support bf16 through autocast only)."""
    mixer = make(name)
    _, batch, pad = padded_pair(garbage=1.0)
    with torch.no_grad():
        ref = mixer(batch, pad)
        out = mixer.to(torch.bfloat16)(batch.to(torch.bfloat16), pad)
    assert out.dtype == torch.bfloat16
    _assert_bf16_close(name, out, ref, ~pad)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_builds_no_tensor_on_another_device(name):
    """Run on the meta device: any tensor made on the CPU inside forward would raise."""
    mixer = make(name).to("meta")
    x = torch.empty(2, 8, D, device="meta")
    pad = torch.zeros(2, 8, dtype=torch.bool, device="meta")
    assert mixer(x, pad).device.type == "meta"


@pytest.mark.parametrize("name", ["hypermixing", "fastformer"])
def test_causal_mode_is_refused_clearly_where_unsupported(name):
    with pytest.raises(ValueError, match="causal=True is not supported"):
        make(name, causal=True)


@pytest.mark.parametrize("name", ORDER_FREE)
def test_order_free_mixers_are_permutation_equivariant(name):
    mixer = make(name)
    torch.manual_seed(3)
    x = torch.randn(2, 11, D)
    perm = torch.randperm(11)
    with torch.no_grad():
        torch.testing.assert_close(mixer(x)[:, perm], mixer(x[:, perm]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["relposmhaxl", "ropemha", "hypermixing", "mamba"])
def test_position_aware_mixers_are_not_permutation_equivariant(name):
    mixer = make(name)
    torch.manual_seed(3)
    x = torch.randn(2, 11, D)
    perm = torch.randperm(11)
    with torch.no_grad():
        diff = (mixer(x)[:, perm] - mixer(x[:, perm])).abs().max().item()
    assert diff > 1e-2, f"{name} should be order-aware"


def test_pom_matches_its_equation():
    """Product form: y = LN(W_o [sigmoid(W_s x) * mean_t [h1 | h1*h2]])."""
    mixer = make("pom")
    x = torch.randn(1, 5, D)
    with torch.no_grad():
        a1, a2 = torch.nn.functional.gelu(mixer.polynomial_proj(x)).chunk(2, dim=-1)
        state = torch.cat([a1, a1 * a2], dim=-1).mean(dim=1, keepdim=True)
        gate = torch.sigmoid(mixer.selection_proj(x))
        expected = mixer.norm(mixer.output_proj(gate * state))
        torch.testing.assert_close(mixer(x), expected)
    assert mixer.polynomial_proj.out_features == 2 * 2 * D  # k * D * d


def test_pom_state_widths():
    assert PolynomialMixer(D, degree=3, expansion=2).state_dim == 3 * 2 * D
    assert PolynomialMixer(D, degree=3, expansion=2, form="power_series").state_dim == 2 * D
    assert SelectivePolynomialMixer(D, degree=3, expansion=2).state_dim == 2 * D
    assert FrequencyAwarePolynomialMixer(D, groups=3, degree=2, expansion=2).state_dim == 2 * 2 * D


def test_summary_mixing_lite_is_constant_over_time():
    mixer = make("summarymixing_lite")
    with torch.no_grad():
        out = mixer(torch.randn(2, 6, D))
    torch.testing.assert_close(out, out[:, :1].expand_as(out))


def test_summary_mixing_matches_its_equation():
    """y_t = c(dropout([f(x_t) ; mean over valid frames of s(x)])), both branches Linear+act blocks."""
    mixer = make("summarymixing")
    _, batch, pad = padded_pair()
    gelu = torch.nn.functional.gelu
    with torch.no_grad():
        local = mixer.local_proj(batch)
        summary = mixer.summary_proj(batch)
        s_bar = torch.stack([summary[0, :7].mean(0), summary[1].mean(0)]).unsqueeze(1).expand(-1, 12, -1)
        merge = mixer.merge_proj[0]
        expected = gelu(torch.cat([local, s_bar], dim=-1) @ merge.weight.T + merge.bias)
        torch.testing.assert_close(mixer(batch, pad)[~pad], expected[~pad])
        lite = make("summarymixing_lite")
        summary = lite.summary_proj(batch)
        s_bar = torch.stack([summary[0, :7].mean(0), summary[1].mean(0)]).unsqueeze(1).expand(-1, 12, -1)
        torch.testing.assert_close(lite(batch, pad), s_bar)  # the summary itself, no merge


def test_summary_mixing_has_the_official_structure():
    """Branches: len(hidden)+1 Linear+activation blocks, grouped by nhead; merge: one dense block."""
    from pom.mixers.summary_mixing import GroupedLinear

    def linears(seq):
        return [(m.in_features, m.out_features, getattr(m, "groups", 1)) for m in seq if hasattr(m, "in_features")]

    mixer = make("summarymixing_deep")
    assert linears(mixer.local_proj) == [(D, 16, 2), (16, 8, 2), (8, 16, 2)]
    assert linears(mixer.summary_proj) == [(D, 32, 2), (32, 16, 2), (16, D, 2)]
    assert linears(mixer.merge_proj) == [(16 + D, D, 1)]
    assert all(isinstance(m, torch.nn.GELU) for m in list(mixer.local_proj)[1::2] + list(mixer.merge_proj)[1::2])
    fast = make("summarymixing_fast")
    assert linears(fast.shared_proj) == [(D, 32, 1)] and linears(fast.merge_proj) == [(32, D, 1)]
    assert not hasattr(fast, "local_proj") and not hasattr(fast, "summary_proj")
    lite = make("summarymixing_lite")
    assert not hasattr(lite, "local_proj") and not hasattr(lite, "merge_proj")
    assert all(p.abs().sum() == 0 for n, p in mixer.named_parameters() if n.endswith("bias"))  # as the official init
    # block-diagonal: a change in the first channel group only reaches the first output group
    x = torch.randn(1, 3, D)
    y = x.clone()
    y[..., : D // 2] += 1.0
    with torch.no_grad():
        diff = (mixer.local_proj(x) - mixer.local_proj(y)).abs()
    assert diff[..., 8:].max() == 0 and diff[..., :8].max() > 0
    assert isinstance(mixer.local_proj[0], GroupedLinear)
    assert isinstance(make("summarymixing_one_head").local_proj[0], torch.nn.Linear)


def test_summary_mixing_parameter_count():
    """d = 632, 8 heads, local [512] -> 512, summary [1024] -> d, merge (512 + d) -> d (the BEST-RQ config)."""
    d, h = 632, 8
    expected = (d * 512 // h + 512) + (512 * 512 // h + 512)  # local branch
    expected += (d * 1024 // h + 1024) + (1024 * d // h + d)  # summary branch
    expected += (512 + d) * d + d  # merge
    with torch.device("meta"):
        mixer = SummaryMixing(d, nhead=h)
    assert sum(p.numel() for p in mixer.parameters()) == expected


def test_summary_mixing_options_are_checked():
    with pytest.raises(ValueError, match="divisible by nhead"):
        SummaryMixing(D, nhead=5)
    with pytest.raises(ValueError, match="unknown mode"):
        SummaryMixing(D, nhead=4, mode="expdecay")
    with pytest.raises(TypeError, match="list of hidden widths"):
        SummaryMixing(D, 4, 16, 32)  # the former (d_model, local_dim, summary_dim) call
    with pytest.raises(ValueError, match="rejected its options"):
        build_mixer("summarymixing", d_model=D, local_dim=16)
    assert SummaryMixing(D, nhead=4, mode="SummaryMixing-lite").mode == "lite"


def test_ropemha_mixer_is_speechbrains_rope_attention():
    mixer = make("ropemha")
    _, batch, pad = padded_pair(garbage=1.0)
    with torch.no_grad():
        ref, _ = mixer.attention(batch, batch, batch, key_padding_mask=pad)
        torch.testing.assert_close(mixer(batch, pad)[~pad], ref[~pad])
        future = torch.ones(12, 12, dtype=torch.bool).triu(1)
        ref, _ = mixer.attention(batch, batch, batch, attn_mask=future)
        torch.testing.assert_close(make("ropemha", causal=True)(batch), ref)


def test_masked_mean_ignores_non_finite_padding():
    h = torch.tensor([[[1.0], [3.0], [float("nan")]]])
    pad = torch.tensor([[False, False, True]])
    assert masked_mean(h, pad).item() == 2.0


def test_registry_errors_are_clear():
    with pytest.raises(ValueError, match="Unknown mixer 'attention'.*pom.*summarymixing"):
        build_mixer("attention", d_model=8)
    with pytest.raises(ValueError, match="rejected its options"):
        build_mixer("pom", d_model=8, heads=3)
    with pytest.raises(ValueError, match="divisible by groups"):
        FrequencyAwarePolynomialMixer(10, groups=3)
    assert set(MIXERS) >= {
        "relposmhaxl",
        "ropemha",
        "mha",
        "summarymixing",
        "pom",
        "pom_selective",
        "pom_frequency",
        "hypermixing",
        "fastformer",
        "mamba",
    }


def test_mamba_backward_direction_ignores_padding_on_both_sides():
    """The right-to-left pass reverses each utterance within its own length."""
    mixer = make("mamba")
    short, batch, pad = padded_pair(garbage=1e4)
    with torch.no_grad():
        alone = mixer.backward_mamba(short.flip(1)).flip(1)
        from pom.mixers.mamba import reverse_within_length

        in_batch = reverse_within_length(mixer.backward_mamba(reverse_within_length(batch, pad)), pad)
    torch.testing.assert_close(in_batch[:1, : short.shape[1]], alone, atol=1e-5, rtol=1e-5)
