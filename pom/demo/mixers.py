"""``python -m pom.demo --mixers ...``: other mixers at the demo's size, parameter-matched.

Each mixer gets the demo's encoder sizes (:data:`pom.demo.settings.MODEL`) with the ``d_model``
(a multiple of 8) whose CNN + encoder parameter count is closest to the demo's PoM, and, for mixers
whose full-size options are widths, those widths scaled to the demo (:data:`DEMO_MIXER_OPTIONS`).
:func:`comparison_table` prints the paper's table in miniature from the runs' results.

Example
-------
>>> model_overrides({"d_model": 176}, {"hypernet_size": 448})
{'d_model': 176, 'mixer_options': '{hypernet_size: 448}'}
"""

import os
import tempfile

from pom.demo.settings import MIXER, ROOT

#: Mixer options at demo size, for mixers whose full-size options are widths
#: (SummaryMixing's branches, HyperMixing's hypernetwork): the ratios of the
#: full-size models to their d_model, at the demo's d_model.
DEMO_MIXER_OPTIONS = {
    "summarymixing": {"local_proj_hid_dim": [128], "local_proj_out_dim": 128, "summary_hid_dim": [256]},
    "hypermixing": {"hypernet_size": 448},
}
#: d_model candidates when parameter-matching another mixer to the demo's PoM
D_MODEL_CANDIDATES = range(48, 321, 8)
#: The four evaluation splits of the comparison table
SPLITS = ("dev-clean", "dev-other", "test-clean", "test-other")


def encoder_parameters(mixer, model, mixer_options=None):
    """CNN + encoder parameters of ``hparams/pretrain/<mixer>.yaml`` at the demo's
    sizes ``model`` (built on the meta device: no memory)."""
    import torch

    from pom.parameters import count_parameters
    from pom.recipe.hparams import load_hparams

    changes = dict(model, data_folder=tempfile.gettempdir(), output_folder=tempfile.gettempdir())
    if mixer_options:
        changes["mixer_options"] = mixer_options
    text = "\n".join(f"{k}: {v}" for k, v in changes.items())
    with torch.device("meta"):
        hp = load_hparams(os.path.join(ROOT, "hparams", "pretrain", f"{mixer}.yaml"), text)
    return count_parameters(hp["CNN"], hp["encoder"])


def matched_model(mixer, model, reference=MIXER):
    """The demo's encoder sizes for ``mixer``: ``model`` with the ``d_model``
    (a multiple of 8) whose CNN + encoder parameter count is closest to the
    ``reference`` mixer's at ``model``; returns ``(sizes, mixer options, count)``.

    Example
    -------
    >>> from pom.demo.settings import MODEL
    >>> sizes, options, count = matched_model("pom", MODEL)
    >>> sizes["d_model"] == MODEL["d_model"], options
    (True, {})
    """
    options = DEMO_MIXER_OPTIONS.get(mixer, {})
    target = encoder_parameters(reference, model)
    if mixer == reference:
        return dict(model), options, target
    counts = {}
    for d in D_MODEL_CANDIDATES:
        try:
            counts[d] = encoder_parameters(mixer, dict(model, d_model=d), options)
        except ValueError:  # a size the mixer refuses (e.g. RoPE needs an even head size)
            continue
    best = min(counts, key=lambda d: abs(counts[d] - target))
    return dict(model, d_model=best), options, counts[best]


def model_overrides(sizes, options=None):
    """Command-line overrides of an encoder: its ``sizes`` and, if any, its mixer ``options``
    written as one YAML mapping (example at the top of this module)."""
    model = dict(sizes)
    if options:
        model["mixer_options"] = "{" + ", ".join(f"{k}: {v}" for k, v in options.items()) + "}"
    return model


def comparison_table(records):
    """The paper's table in miniature: one row per mixer (Markdown), from the records of
    :func:`pom.demo.pipeline.run_mixer` (with ``params`` added)."""
    from pom.results import find_runs

    header = ["mixer", "params (M)", "pre-training (min)", "fine-tuning (min)", "peak memory (MiB)"]
    header += [f"{split} WER / CER" for split in SPLITS]
    header += [f"{split} +LM WER" for split in ("test-clean", "test-other")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for mixer, record in records.items():
        results = dict((("lm" if r.get("lm") else "plain"), r) for _, r in find_runs([record["runs"][0]]))
        plain, lm = results.get("plain", {}).get("splits", {}), results.get("lm", {}).get("splits", {})
        cells = [
            mixer, f"{record['params'] / 1e6:.2f}", f"{record['times_s']['pretrain'] / 60:.1f}",
            f"{record['times_s']['finetune'] / 60:.1f}", f"{max(record['peak_MiB'].values()):.0f}",
        ]  # fmt: skip
        for split in SPLITS:
            m = plain.get(split, {})
            cells.append(f"{m['WER']:.1f} / {m['CER']:.1f}" if m else "-")
        for split in ("test-clean", "test-other"):
            cells.append(f"{lm[split]['WER']:.1f}" if split in lm else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
