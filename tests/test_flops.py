"""Mixer FLOPs: linear growth for PoM and SummaryMixing, quadratic for attention.

The mixers are those of the benchmark models (``benchmarks/common.py``), built on
the ``meta`` device from ``hparams/pretrain/<experiment>.yaml`` with the sizes
users train; ``python -m benchmarks.flops`` counts them.
"""

import pytest

from benchmarks import common, flops
from pom.flops import growth_ratios, mixer_flops, module_flops

LINEAR = [
    "pom",
    "pom_k3",
    "pom_chunked",
    "pom_selective",
    "pom_frequency",
    "summarymixing",
    "fastformer",
    "hypermixing",
    "mamba",
    "pom_large",
    "summarymixing_large",
]
QUADRATIC = ["mha", "relposmhaxl", "ropemha", "relposmhaxl_large"]
SECONDS = [20, 40, 80, 160, 320]  # 500 to 8000 encoder frames


def ratios(name):
    counts = [row["gflops"] for row in flops.layer_flops(name, SECONDS)]
    return [b / a for a, b in zip(counts, counts[1:])]


@pytest.mark.parametrize("name", LINEAR)
def test_linear_mixers_flops_grow_linearly(name):
    assert ratios(name) == pytest.approx([2.0] * (len(SECONDS) - 1), rel=1e-3)


@pytest.mark.parametrize("name", QUADRATIC)
def test_attention_flops_grow_quadratically(name):
    growth = ratios(name)
    assert all(r > 2.2 for r in growth)
    assert all(b > a for a, b in zip(growth, growth[1:]))  # approaching 4 from below
    assert 3.5 < growth[-1] < 4.0


def test_registry_mixers_grow_as_the_built_ones():
    assert growth_ratios("pom", 64, [100, 200, 400], degree=2, expansion=2) == pytest.approx([2.0, 2.0])
    assert all(r > 2.2 for r in growth_ratios("mha", 64, [400, 800, 1600], nhead=4))


def built_mixer(name, **options):
    model, hparams = common.build_model(name, layers=1, device="meta", **options)
    return common.mixer_of(model), hparams["d_model"]


def test_a_built_mixer_counts_as_the_registry_one():
    mixer, d_model = built_mixer("pom")
    assert module_flops(mixer, d_model, 1000) == mixer_flops("pom", d_model, 1000, degree=2, expansion=2)


def test_chunked_pom_counts_the_same_forward_flops_as_plain():
    plain, d_model = built_mixer("pom")
    chunked, _ = built_mixer("pom_chunked", chunk_size=512)
    assert module_flops(chunked, d_model, 1000) == module_flops(plain, d_model, 1000)


def test_backward_is_counted():
    plain, d_model = built_mixer("pom")
    chunked, _ = built_mixer("pom_chunked", chunk_size=512)
    forward = module_flops(plain, d_model, 1000)
    assert module_flops(plain, d_model, 1000, backward=True) == pytest.approx(3 * forward, rel=1e-2)
    assert module_flops(chunked, d_model, 1000, backward=True) == pytest.approx(
        4 * forward, rel=1e-2
    )  # one recomputed forward


def test_flops_script_writes_csv_table_and_plot(tmp_path, capsys):
    assert flops.main(["--mixers", "pom", "mha", "--seconds", "10", "20", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "flops.csv").read_text().splitlines()[0] == "mixer,d_model,seconds,frames,gflops"
    assert (tmp_path / "flops.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "| pom (488) | 1.4 | 2.9 | 2.00 |" in printed and "| mha (576) |" in printed
