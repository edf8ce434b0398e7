"""Unit tests of pom.bestrq (quantizer, mask mapping) and of the pre-training recipe's support in
pom.recipe (kill-safe checkpoints, encoder configuration, fingerprints, hparams overlays)."""

import os
import random

import pytest
import torch
from speechbrain.lobes.models.BESTRQ import compute_mask
from speechbrain.nnet.quantisers import RandomProjectionQuantizer as SBQuantizer

from pom.bestrq import RandomProjectionQuantizer, masked_stacked_indices, pad_to_multiple
from pom.recipe.checkpoints import EncoderConfig, KillSafeCheckpointer, module_fingerprint
from pom.recipe.hparams import load_hparams

HPARAMS = os.path.join(os.path.dirname(__file__), "..", "hparams", "pretrain")


def test_quantizer_matches_speechbrain_nearest_code():
    """argmax(y CB^T) picks SpeechBrain's nearest code (argmin distance), feature-axis normalisation."""
    ours = RandomProjectionQuantizer(input_dim=40, cb_dim=8, cb_vocab=300, seed=1)
    sb_quantizer = SBQuantizer(40, 8, 300)
    sb_quantizer.P.copy_(ours.P)
    sb_quantizer.CB.copy_(ours.CB)
    x = torch.randn(3, 11, 40) * 5
    assert torch.equal(ours(x), sb_quantizer(x))
    # The code depends on each frame alone (normalised over features, not time).
    assert torch.equal(ours(x[:, :4]), ours(x)[:, :4])


def test_quantizer_seeded_frozen_float32():
    a = RandomProjectionQuantizer(320, 16, 1024, seed=7)
    torch.manual_seed(123)  # the global RNG plays no part
    b = RandomProjectionQuantizer(320, 16, 1024, seed=7)
    c = RandomProjectionQuantizer(320, 16, 1024, seed=8)
    assert torch.equal(a.CB, b.CB) and torch.equal(a.P, b.P)
    assert not torch.equal(a.CB, c.CB)
    assert list(a.state_dict()) == ["P", "CB"] and not list(a.parameters())
    assert torch.allclose(a.CB.norm(dim=-1), torch.ones(1024))
    bound = (6 / (320 + 16)) ** 0.5  # Xavier-uniform
    assert a.P.abs().max() <= bound
    x = torch.randn(2, 50, 320)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        codes_bf16 = a(x)
    assert torch.equal(codes_bf16, a(x))


def test_mask_maps_to_encoder_frames():
    random.seed(0)
    torch.manual_seed(0)
    for _ in range(20):
        lens = [random.randint(20, 400) for _ in range(4)]
        mask = compute_mask((4, max(lens), 80), lens, 0.15, 4)
        idx = masked_stacked_indices(mask, 4)
        assert len(idx) * 4 == len(mask)  # whole, non-overlapping spans of 4
        assert torch.equal(torch.repeat_interleave(idx * 4, 4) + torch.arange(4).repeat(len(idx)), mask)
        assert idx.max() < min(lens) // 4
    feats = pad_to_multiple(torch.randn(2, 401, 80), 4)
    assert feats.shape == (2, 404, 80) and torch.equal(feats[:, 401:], torch.zeros(2, 3, 80))


def test_killsafe_checkpointer_ignores_interrupted_save(tmp_path):
    layer = torch.nn.Linear(3, 3)
    ckpt = KillSafeCheckpointer(tmp_path, {"layer": layer, "config": EncoderConfig(d_model=3)})
    first = ckpt.save_checkpoint(meta={"n": 1})
    saved = layer.weight.detach().clone()

    class Crash(Exception):
        pass

    def crash(obj, path):
        raise Crash  # e.g. the process is killed while writing this file

    ckpt.custom_save_hooks["layer"] = crash
    with torch.no_grad():
        layer.weight.add_(1.0)
    with pytest.raises(Crash):
        ckpt.save_checkpoint(meta={"n": 2})
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("CKPT")]) == 2
    assert ckpt.find_checkpoint().meta["n"] == 1  # the partial one is invisible
    ckpt.recover_if_possible()
    assert torch.equal(layer.weight, saved)

    del ckpt.custom_save_hooks["layer"]
    third = ckpt.save_checkpoint(meta={"n": 3})
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("CKPT"))
    assert names == sorted([first.path.name, third.path.name])  # the partial one was removed


def test_encoder_config_refuses_other_architecture(tmp_path):
    ckpt = KillSafeCheckpointer(tmp_path, {"encoder_config": EncoderConfig(mixer="pom", d_model=8)})
    ckpt.save_checkpoint()
    other = KillSafeCheckpointer(tmp_path, {"encoder_config": EncoderConfig(mixer="mha", d_model=8)})
    with pytest.raises(ValueError, match="mixer: 'pom' \\(saved\\) != 'mha' \\(here\\)"):
        other.recover_if_possible()


def test_overlay_hparams(tmp_path):
    overrides = (
        f"data_folder: {tmp_path}\noutput_folder: {tmp_path}/out\nd_model: 32\nnum_layers: 1\nd_ffn: 64\ncb_vocab: 16\n"
    )
    pom = load_hparams(os.path.join(HPARAMS, "pom.yaml"), overrides + "mixer_options: {degree: 3}\nwarmup_steps: 7")
    assert pom["mixer"] == "pom" and pom["lr"] == 0.001 and pom["weight_decay"] == 0.1
    assert pom["mixer_options"] == {"degree": 3, "expansion": 2}  # merged key by key
    assert pom["noam_annealing"].n_warmup_steps == 7  # a base key, from the command line
    assert pom["encoder"].encoder.layers[0].mixer.degree == 3
    mha = load_hparams(os.path.join(HPARAMS, "relposmhaxl.yaml"), overrides)
    assert mha["lr"] == 0.0008 and mha["weight_decay"] == 0.01 and mha["mixer_options"] == {"nhead": 8, "dropout": 0.1}
    with pytest.raises(KeyError, match="dmodel"):
        load_hparams(os.path.join(HPARAMS, "pom.yaml"), overrides + "dmodel: 3")
    # an option given twice on the command line: a one-line ValueError (the recipes print it)
    with pytest.raises(
        ValueError, match='command-line overrides: found duplicate key "d_model".*give each --option once'
    ):
        load_hparams(os.path.join(HPARAMS, "pom.yaml"), overrides + "d_model: 16")


def test_module_fingerprint_sensitive_to_one_bit():
    layer = torch.nn.Linear(4, 4)
    before = module_fingerprint(layer)
    with torch.no_grad():
        layer.weight[0, 0] = torch.nextafter(layer.weight[0, 0], torch.tensor(10.0))
    assert module_fingerprint(layer) != before
