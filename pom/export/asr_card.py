"""The model card (``README.md``) of an exported fine-tuned model: front matter for model
hubs, the run's error rates, how to load it, its files and training.

Example
-------
>>> INTERFACE
'speechbrain.inference.ASR.EncoderASR'

Authors
 * pom-speech contributors 2025
"""

import os

from pom.export.hub import PAPER, file_list, front_matter, usage_lines

INTERFACE = "speechbrain.inference.ASR.EncoderASR"


def _wer_table(run):
    plain, lm = run.results() or {}, run.results(lm=True) or {}
    splits = list(dict.fromkeys(list(plain.get("splits", {})) + list(lm.get("splits", {}))))
    if not splits:
        return "No results.json in the run folder: no error rates to report.\n", []
    with_lm = bool(lm.get("splits"))
    header = "| split | WER | CER |" + (" WER +LM | CER +LM |" if with_lm else "")
    rows = [header, "|---|---|---|" + ("---|---|" if with_lm else "")]

    def cell(results, split, key):
        value = results.get("splits", {}).get(split, {}).get(key)
        return f"{value:.2f}" if isinstance(value, (int, float)) else "-"

    for split in splits:
        cells = [split, cell(plain, split, "WER"), cell(plain, split, "CER")]
        if with_lm:
            cells += [cell(lm, split, "WER"), cell(lm, split, "CER")]
        rows.append("| " + " | ".join(cells) + " |")
    notes = []
    if plain:
        notes.append(
            f"Without LM: {plain.get('decoding', '?')} decoding"
            + (f", beam {plain['beam_size']}" if plain.get("beam_size") else "")
        )
    if lm:
        notes.append(f"+LM: beam {lm.get('beam_size', '?')} with {os.path.basename(str(lm.get('lm') or '?'))}")
    index = []
    for results, tag in ((plain, ""), (lm, " +LM")):
        for split, values in results.get("splits", {}).items():
            if "WER" in values:
                index.append((split + tag, values["WER"]))
    return "\n".join(rows) + "\n\n" + ("; ".join(notes) + ".\n" if notes else ""), index


def _describe_checkpoint(run):
    ckpt = run.checkpoint
    path = str(ckpt.path)
    meta = {k: v for k, v in (getattr(ckpt, "meta", None) or {}).items() if k in ("WER", "CER", "loss")}
    values = ", ".join(f"{k} {v:.4g}" for k, v in meta.items() if isinstance(v, (int, float)))
    if os.path.basename(os.path.dirname(path)) == "averaged":
        how = "the average of the run's best checkpoints (see results.json)"
    else:
        how = f"the lowest validation {run.best_metric}" + (f": {values}" if values else "")
    return f"`{os.path.relpath(path, run.folder)}` ({how}; the checkpoint the run tested with)"


def model_card(run, out, written, example, described, reference, decoding, lm_path):
    """The ``README.md`` of an exported fine-tuned model: front matter and description."""
    h, config = run.hparams, run.config
    name = h.get("experiment_name", "pom-speech")
    table, index = _wer_table(run)
    results = []
    for split, wer in index:
        base = split.split(" ")[0]
        results.append(
            {
                "task": {"name": "Automatic Speech Recognition", "type": "automatic-speech-recognition"},
                "dataset": {
                    "name": f"LibriSpeech ({split})",
                    "type": "librispeech_asr",
                    "config": "other" if "other" in base else "clean",
                    "split": "test" if base.startswith("test") else "validation",
                },
                "metrics": [{"name": f"WER {split}", "type": "wer", "value": float(wer)}],
            }
        )
    fields = {
        "language": "en",
        "library_name": "speechbrain",
        "license": "apache-2.0",
        "pipeline_tag": "automatic-speech-recognition",
        "tags": ["automatic-speech-recognition", "CTC", "speechbrain", "pom-speech", "best-rq", "conformer",
                 str(config["mixer"]), "pytorch"],
        "datasets": ["librispeech_asr"],
        "metrics": ["wer", "cer"],
    }  # fmt: skip
    if results:
        fields["model-index"] = [{"name": f"pom-speech {name}", "results": results}]
    plain = run.results() or {}
    params = plain.get("params_total")
    lines = usage_lines(INTERFACE, out, example)
    files = file_list(written["files"]) + [f"* `{example}`: {described}", "* `README.md`: this card"]
    decoding_text = "greedy CTC decoding" if decoding == "greedy" else "SpeechBrain's CTC beam search"
    if lm_path:
        decoding_text += f" with the n-gram LM `{os.path.basename(lm_path)}`"
    lm_note = ""
    if written["lm"]:
        lm_note = (
            "\n\nThe LM is named by its absolute path in hyperparams.yaml: after moving or uploading this folder, "
            f"pass `overrides={{'kenlm_model_path': '<folder or hub repo>/{written['lm']}'}}` to `from_hparams`."
        )
    example_note = f"\n\nReference transcript of the example: {reference}" if reference else ""
    splits = ", ".join(plain.get("train_splits", [])) or "?"
    streaming = "no"
    if h.get("streaming"):
        streaming = (
            "trained with dynamic chunks, exported for full-context inference (pom.transcribe --chunk_size decodes"
        )
        streaming += " chunk by chunk)"
    if config.get("causal"):
        streaming += "; causal encoder"
    sizes = f"{h['token_type']} tokens, {h['output_neurons']} outputs" + (
        f", {params / 1e6:.2f} M parameters" if params else ""
    )
    return f"""{front_matter(fields)}

# {name}: {config["mixer"]} Conformer, BEST-RQ pre-trained, CTC fine-tuned

A CTC speech recogniser trained with the pom-speech recipes (SpeechBrain): waveform -> Fbank ({config["n_mels"]} mels)
-> {config["norm_type"]} normalisation -> CNN front end -> a {config["num_layers"]}-layer Conformer whose token mixer
is `{config["mixer"]}` (d_model {config["d_model"]}) -> CTC head ({sizes}). Decoding: {decoding_text}.

## Use it

```python
{chr(10).join(lines)}
```

`asr.transcribe_batch(wavs, wav_lens)` transcribes a padded batch (waveforms at {config["sample_rate"]} Hz,
relative lengths); `asr.encode_batch(wavs, wav_lens)` gives the CTC log-probabilities. Needs SpeechBrain and the
`pom` package (pom-speech, for `pom.encoder.MixerEncoder`). `python -m pom.transcribe --model <run folder>` decodes
many files in batches from the run itself.{lm_note}

## Results (%)

{table}
## Files

{chr(10).join(files)}{example_note}

## Training

* run: `{run.folder}`
* checkpoint: {_describe_checkpoint(run)}
* pre-trained encoder: `{plain.get("pretrained")}`; epochs: {plain.get("epochs", "?")}; training splits: {splits}
* streaming: {streaming}

## Reference

{PAPER}
"""
