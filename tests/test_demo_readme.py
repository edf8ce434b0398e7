"""The numbers the READMEs quote from ``make demo`` are those of ``pom/demo/settings.py``:
change a setting and this fails until the README says the same (and the reverse)."""

import os
import re

import pytest

from pom.demo import settings
from pom.demo.mixers import encoder_parameters

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def section(path, title):
    """The text of the Markdown section ``title`` (from its heading to the next one of its level)."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        text = f.read()
    match = re.search(rf"^(#+) {re.escape(title)}\n(.*?)(?=^\1 |\Z)", text, flags=re.M | re.S)
    assert match, f"{path}: no section {title!r}"
    return " ".join(match.group(2).split())  # one line: sentences may wrap anywhere


def minutes_or_seconds(seconds):
    """``10 s``, ``2 min``: how the README writes an input length."""
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def quoted_settings():
    """(what, the phrase the README's ``make demo`` section must contain)."""
    model, pretrain, finetune, lm = settings.MODEL, settings.PRETRAIN, settings.FINETUNE, settings.LM
    params = encoder_parameters(settings.MIXER, model)
    phrases = [
        ("corpus size", f"{settings.DEFAULT_HOURS:g} h espeak-ng corpus"),
        ("LM order", f"word {settings.LM_ORDER}-gram LM"),
        (
            "model size",
            f"{model['num_layers']} layers, d_model {model['d_model']}, {params / 1e6:.1f} M parameters",
        ),
        ("pre-training steps", f"{pretrain['optimizer_step_limit']} steps"),
        ("fine-tuning data", " + ".join(settings.FINETUNE_SPLITS)),
        ("fine-tuning epochs", f"{finetune['number_of_epochs']} epochs"),
        ("LM decoding", f"beam {lm['beam_size']}, alpha {lm['lm_alpha']}, beta {lm['lm_beta']}"),
        (
            "efficiency lengths",
            f"{minutes_or_seconds(settings.EFFICIENCY_SECONDS[0])} to "
            f"{minutes_or_seconds(settings.EFFICIENCY_SECONDS[-1])} of input",
        ),
    ]
    if finetune["test_decoding"] == "beam":
        phrases.append(("test decoding", f"CTC beam search (beam {finetune['beam_size']})"))
    else:
        phrases.append(("test decoding", "greedy CTC decoding"))
    return phrases


@pytest.mark.parametrize("what, phrase", quoted_settings(), ids=[what for what, _ in quoted_settings()])
def test_the_readme_quotes_the_demo_settings(what, phrase):
    assert phrase in section("README.md", "`make demo`: the whole job on a synthetic corpus"), (
        f"README.md, `make demo` section: the {what} should read {phrase!r} (pom/demo/settings.py)"
    )


def test_the_recipes_readme_quotes_the_demo_corpus_size():
    text = section("recipes/LibriSpeech/README.md", "Synthetic LibriSpeech (no download needed)")
    assert f"| {settings.DEFAULT_HOURS:g} (`make demo`) |" in text


def test_the_section_finder_fails_on_a_missing_section():
    with pytest.raises(AssertionError, match="no section"):
        section("README.md", "no such section")
