"""Mixer FLOPs: linear growth for PoM and SummaryMixing, quadratic for attention."""

import pytest

from pom.flops import growth_ratios, mixer_flops

LINEAR = {
    "pom": (488, {"degree": 2, "expansion": 2}),
    "pom_k3": (432, {"degree": 3, "expansion": 2}),
    "pom_chunked": (488, {"degree": 2, "expansion": 2, "implementation": "chunked", "chunk_size": 512}),
    "pom_selective": (488, {"degree": 2, "expansion": 2}),
    "pom_frequency": (488, {"groups": 2}),
    "summarymixing": (632, {"nhead": 8}),
}
QUADRATIC = {
    "mha": (576, {"nhead": 8}),
    "relposmhaxl": (576, {"nhead": 8}),
    "ropemha": (576, {"nhead": 8}),
}
LENGTHS = [500, 1000, 2000, 4000, 8000]  # encoder frames (25 per second): 20 s to 320 s


def registry_name(name):
    return "pom" if name in ("pom_k3", "pom_chunked") else name


@pytest.mark.parametrize("name", list(LINEAR))
def test_linear_mixers_flops_grow_linearly(name):
    d_model, options = LINEAR[name]
    for ratio in growth_ratios(registry_name(name), d_model, LENGTHS, **options):
        assert ratio == pytest.approx(2.0, rel=1e-3)


@pytest.mark.parametrize("name", list(QUADRATIC))
def test_attention_flops_grow_quadratically(name):
    d_model, options = QUADRATIC[name]
    ratios = growth_ratios(name, d_model, LENGTHS, **options)
    assert all(r > 2.2 for r in ratios)
    assert all(b > a for a, b in zip(ratios, ratios[1:]))  # approaching 4 from below
    assert 3.5 < ratios[-1] < 4.0


def test_chunked_pom_counts_the_same_forward_flops_as_plain():
    d_model, options = LINEAR["pom"]
    assert mixer_flops("pom", d_model, 1000, **LINEAR["pom_chunked"][1]) == mixer_flops("pom", d_model, 1000, **options)


def test_backward_is_counted():
    d_model, options = LINEAR["pom"]
    forward = mixer_flops("pom", d_model, 1000, **options)
    plain = mixer_flops("pom", d_model, 1000, backward=True, **options)
    chunked = mixer_flops("pom", d_model, 1000, backward=True, **LINEAR["pom_chunked"][1])
    assert plain == pytest.approx(3 * forward, rel=1e-2)
    assert chunked == pytest.approx(4 * forward, rel=1e-2)  # one recomputed forward
