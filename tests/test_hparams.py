"""Every mixer has a pre-training and a fine-tuning file, and they describe the same encoder."""

import pathlib
import re

import pytest

from pom.mixers import MIXERS

HPARAMS = pathlib.Path(__file__).resolve().parents[1] / "hparams"
ENCODER_KEYS = ("mixer", "mixer_options", "positional_encoding", "d_model")


def encoder_block(path):
    """The top-level encoder keys of a per-mixer file (with their nested lines), as text."""
    block, keep = {}, None
    for line in path.read_text().splitlines():
        line = re.sub(r"\s+#.*$", "", line)
        top = re.match(r"^(\w+):", line)
        if top:
            keep = top.group(1) if top.group(1) in ENCODER_KEYS else None
        if keep:
            block.setdefault(keep, []).append(line.rstrip())
    return block


@pytest.mark.parametrize("mixer", sorted(MIXERS))
def test_pretrain_and_finetune_files_agree_on_the_encoder(mixer):
    pre, fine = HPARAMS / "pretrain" / f"{mixer}.yaml", HPARAMS / "finetune" / f"{mixer}.yaml"
    assert pre.is_file() and fine.is_file(), f"missing {pre} or {fine}"
    pre_block, fine_block = encoder_block(pre), encoder_block(fine)
    assert set(pre_block) == set(ENCODER_KEYS), f"{pre} should set {ENCODER_KEYS}"
    assert pre_block == fine_block
