"""A pre-trained encoder as a SpeechBrain ``WaveformEncoder`` folder.

:func:`export_pretrained` takes what ``--pretrained_path`` of the fine-tuning
recipe takes (:func:`pom.convert.find_or_convert`: a pre-training
output folder, its ``save/`` or ``pretrained/`` folder, one ``CKPT+*`` folder,
or a SpeechBrain BEST-RQ / PoM authors' checkpoint, converted on the way) and
writes:

* ``hyperparams.yaml`` -- features, normaliser, CNN and encoder in one
  :class:`pom.export.modules.WaveformMixerEncoder` (the ``encoder`` module of
  ``WaveformEncoder``), ``output_all_layers`` (False; True gives every layer's
  output) and a ``pretrainer`` that loads the files below;
* ``encoder.ckpt`` (CNN + encoder: the checkpoint's ``model.ckpt``, the file
  fine-tuning loads) and ``normalizer.ckpt`` (the normalisation statistics);
* ``example.<ext>`` and ``README.md`` (model card).

``WaveformEncoder.encode_file(path)`` gives ``[1, T, d_model]``;
``encode_batch(wavs, wav_lens)`` gives ``{"embeddings": [B, T, d_model]}`` (a
dict, because ``encode_file`` reads that entry), with ``"hidden_states"``
``[num_layers + 1, B, T, d_model]`` when loaded with
``overrides={"output_all_layers": True}`` (or exported with ``all_layers``).

Example
-------
>>> export_pretrained("/nonexistent/run", "/tmp/out")
Traceback (most recent call last):
...
pom.export.hub.ExportError: pretrained_path /nonexistent/run does not exist (give a pre-training output folder, ...

Authors
 * pom-speech contributors 2025
"""

import json
import os
import tempfile

import torch

from pom.export.hub import (
    HPARAMS_FILE,
    PAPER,
    ExportError,
    encoder_yaml,
    example_audio,
    file_list,
    front_matter,
    load_strictly,
    place,
    pretrainer_yaml,
    run_data_folder,
    staged_folder,
    usage_lines,
)

INTERFACE = "speechbrain.inference.encoders.WaveformEncoder"


def find_encoder(path, import_dir):
    """``find_pretrained``'s dict for ``path`` (a foreign checkpoint converted into
    ``import_dir``) with its configuration read into ``"settings"``."""
    from pom.convert import CheckpointFormatError, find_or_convert
    from pom.recipe.checkpoints import EncoderConfig

    try:
        found = find_or_convert(path, import_dir=import_dir)
    except (FileNotFoundError, CheckpointFormatError, ValueError) as err:
        raise ExportError(str(err)) from None
    if found is None:
        raise ExportError(f"{path!r} names no encoder (give a pre-training output folder or a checkpoint folder)")
    if found["config"] is None:
        raise ExportError(
            f"{found['dir']} has no encoder_config.json beside model.ckpt: the architecture is unknown "
            "(export a pre-training output folder of the recipe, or convert the checkpoint with python -m pom.convert)"
        )
    found["settings"] = EncoderConfig.read(found["config"])
    if found["normalize"] is None and found["settings"].get("norm_type") == "global":
        raise ExportError(
            f"{found['dir']} has no normalize.ckpt, but its encoder uses global normalisation (no statistics to export)"
        )
    return found


def _checkpoint_meta(folder):
    path = os.path.join(folder, "checkpoint.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    path = os.path.join(folder, "CKPT.yaml")
    if os.path.isfile(path):
        from ruamel.yaml import YAML

        with open(path, encoding="utf-8") as f:
            return {k: v for k, v in (YAML(typ="safe").load(f) or {}).items() if k != "unixtime"}
    return {}


def write_encoder_folder(found, folder, all_layers=False):
    """Writes ``hyperparams.yaml`` and the weights of ``found`` (:func:`find_encoder`) into ``folder``."""
    config = found["settings"]
    loadables = [("encoder", "pt_model")] + ([("normalizer", "normalize")] if found["normalize"] else [])
    text = [
        "# " + "#" * 76,
        f"# A {config['mixer']} Conformer encoder (pom-speech), BEST-RQ pre-trained",
        "# Inference with SpeechBrain's WaveformEncoder (needs the pom package for pom.encoder):",
        "#   from speechbrain.inference.encoders import WaveformEncoder",
        '#   enc = WaveformEncoder.from_hparams(source="<this folder>", savedir="<a cache folder>")',
        '#   enc.encode_file("example.flac")  # [1, T, d_model]',
        "#   enc.encode_batch(wavs, wav_lens)  # {'embeddings': [B, T, d_model]} (+ 'hidden_states')",
        f"# Written by python -m pom.export from {found['dir']}",
        "# " + "#" * 76,
        "",
        encoder_yaml(config, output_all_layers=all_layers),
        "# Waveforms [B, samples] + relative lengths -> {'embeddings': [B, T, d_model], 'hidden_states': ...}",
        "encoder: !new:pom.export.modules.WaveformMixerEncoder",
        *(f"    {k}: !ref <{k}>" for k in ("compute_features", "normalize", "CNN")),
        "    encoder: !ref <enc>",
        "",
        "modules:",
        "    encoder: !ref <encoder>",
        "",
        "# encoder.ckpt = [CNN, encoder], the pre-training's model.ckpt (what fine-tuning loads)",
        "pt_model: !new:torch.nn.ModuleList",
        "    - [!ref <CNN>, !ref <enc>]",
        "",
        pretrainer_yaml(loadables),
    ]
    with open(os.path.join(folder, HPARAMS_FILE), "w", encoding="utf-8") as f:
        f.write("\n".join(text))
    place(found["model"], os.path.join(folder, "encoder.ckpt"))
    files = [HPARAMS_FILE, "encoder.ckpt"]
    if found["normalize"]:
        place(found["normalize"], os.path.join(folder, "normalizer.ckpt"))
        files.append("normalizer.ckpt")
    return files


def export_pretrained(path, out, all_layers=False, overwrite=False, verify=True):
    """Exports a pre-trained encoder to ``out`` (SpeechBrain's hub format, for ``WaveformEncoder``).

    ``path``: see :func:`pom.convert.find_or_convert`. With
    ``all_layers``, ``encode_batch`` also returns every layer's output by
    default. With ``verify``, the folder must load strictly and encode the
    example into ``[1, T, d_model]`` before it is put in place. Returns the
    absolute path of ``out``.
    """
    out = os.path.abspath(out)
    with tempfile.TemporaryDirectory() as import_dir:
        found = find_encoder(path, import_dir)
        with staged_folder(out, overwrite) as stage:
            _write(found, path, stage, out, all_layers, verify)
    return out


def _write(found, path, stage, out, all_layers, verify):
    """Writes the folder ``stage`` (to be renamed ``out``): files, example, check, model card."""
    files = write_encoder_folder(found, stage, all_layers)
    config = found["settings"]
    folders = [os.path.abspath(str(path)), found["dir"]]
    folders += [os.path.dirname(folders[-1]), os.path.dirname(os.path.dirname(folders[-1]))]
    folders = list(dict.fromkeys(folders))
    data_root = next(filter(None, map(run_data_folder, folders)), None)
    example, described, _ = example_audio(folders, stage, int(config["sample_rate"]), data_root=data_root)
    if verify:
        from speechbrain.inference.encoders import WaveformEncoder

        with tempfile.TemporaryDirectory() as savedir:
            model = load_strictly(WaveformEncoder, stage, savedir, run_opts={"device": "cpu"})
            with torch.no_grad():
                shape = tuple(model.encode_file(os.path.join(stage, example)).shape)
        if len(shape) != 3 or shape[0] != 1 or shape[2] != int(config["d_model"]):
            raise ExportError(f"the exported encoder in {stage} gives {shape}, not [1, T, {config['d_model']}]")
    with open(os.path.join(stage, "README.md"), "w", encoding="utf-8") as f:
        f.write(model_card(found, out, files, example, described, all_layers))


def model_card(found, out, files, example, described, all_layers):
    """The ``README.md`` of an exported pre-trained encoder."""
    config = found["settings"]
    fields = {
        "language": "en",
        "library_name": "speechbrain",
        "license": "apache-2.0",
        "pipeline_tag": "feature-extraction",
        "tags": ["speechbrain", "pom-speech", "best-rq", "self-supervised-learning", "conformer",
                 str(config["mixer"]), "pytorch"],
        "datasets": ["librispeech_asr"],
    }  # fmt: skip
    meta = _checkpoint_meta(found["dir"])
    lines = usage_lines(INTERFACE, out, example)
    listing = file_list(files) + [f"* `{example}`: {described}", "* `README.md`: this card"]
    return f"""{front_matter(fields)}

# A {config["mixer"]} Conformer encoder, BEST-RQ pre-trained (pom-speech)

Self-supervised speech encoder (BEST-RQ) trained with the pom-speech recipes (SpeechBrain): waveform -> Fbank
({config["n_mels"]} mels) -> {config["norm_type"]} normalisation -> CNN front end -> a {config["num_layers"]}-layer
Conformer whose token mixer is `{config["mixer"]}` ({json.dumps(config.get("mixer_options") or {})}), d_model
{config["d_model"]}, one output frame every 40 ms.

## Use it

```python
{chr(10).join(lines)}
```

`encode_file` gives `[1, T, {config["d_model"]}]`. `encode_batch(wavs, wav_lens)` (waveforms at
{config["sample_rate"]} Hz, relative lengths) gives `{{"embeddings": [B, T, {config["d_model"]}]}}`; with
`overrides={{"output_all_layers": True}}` in `from_hparams`{" (the default of this export)" if all_layers else ""}, also
`"hidden_states"`: `[{int(config["num_layers"]) + 1}, B, T, {config["d_model"]}]`, the input of the first layer and
every layer's output. Needs SpeechBrain and the `pom` package (pom-speech, for `pom.encoder.MixerEncoder`). To
fine-tune it with CTC: `recipes/LibriSpeech/finetune/train.py hparams/finetune/<experiment>.yaml
--pretrained_path=<the pre-training run>` (`encoder.ckpt` is its `model.ckpt`).

## Files

{chr(10).join(listing)}

## Pre-training

* checkpoint: `{found["dir"]}`
{chr(10).join(f"* {k}: {v}" for k, v in meta.items()) or "* (no checkpoint metadata)"}

## Reference

{PAPER}
"""
