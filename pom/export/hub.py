"""What both exports share: YAML text, the folder written as a whole, the
example audio, the model card's front matter, and the check that the folder
loads back strictly.

Example
-------
>>> yaml_value({"degree": 2, "name": "pom"}), yaml_value([8, 8]), yaml_value(None)
('{degree: 2, name: "pom"}', '[8, 8]', 'null')
>>> print(front_matter({"library_name": "speechbrain", "tags": ["ctc", "pom"]}))
---
library_name: speechbrain
tags:
- ctc
- pom
---

Authors
 * pom-speech contributors 2025
"""

import contextlib
import csv
import glob
import io
import math
import os
import shutil
import uuid

import torch
from ruamel.yaml import YAML
from speechbrain.dataio import audio_io

#: The file every SpeechBrain interface reads first.
HPARAMS_FILE = "hyperparams.yaml"
#: Splits searched for an example utterance, in this order (then any other non-training CSV).
EXAMPLE_SPLITS = ("test-clean", "test-other", "dev-clean", "dev-other")
#: Longest example utterance taken from a CSV (seconds).
EXAMPLE_MAX_SECONDS = 20.0
#: The paper the encoders come from (model cards).
PAPER = (
    "Feillet, Whetten, Picard, Allauzen. Polynomial Mixing for Efficient Self-supervised Speech Encoders. ICASSP 2026."
)


#: What each exported file holds (model cards).
FILE_NOTES = {
    HPARAMS_FILE: "the modules, tokenizer, decoding and pretrainer (HyperPyYAML)",
    "encoder.ckpt": "CNN front end + encoder weights",
    "head.ckpt": "CTC head weights",
    "normalizer.ckpt": "feature normalisation statistics",
    "tokenizer.ckpt": "the tokenizer (SpeechBrain label encoder, or SentencePiece model)",
    "model.onnx": "ONNX model: Fbank features (N, T, n_mels) + lengths -> CTC log-probabilities",
    "model.int8.onnx": "the ONNX model with int8 matrix products (dynamic quantisation)",
    "tokens.txt": "CTC labels for ONNX clients (symbol id; the space written as \u2581)",
    "fbank.npz": "SpeechBrain's Fbank window and filters for pom.runtime.features (numpy)",
    "onnx.json": "settings of pom.runtime.transcriber (features, frames, decoding)",
}


def file_list(files):
    """Markdown list of exported ``files`` with what they hold."""
    return [f"* `{name}`" + (f": {FILE_NOTES[name]}" if name in FILE_NOTES else ": the n-gram LM") for name in files]


class ExportError(ValueError):
    """A run cannot be exported (one line naming the file or option and what to do)."""


def yaml_value(value):
    """``value`` as a YAML flow value (JSON-like: strings double-quoted, None as null)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {yaml_value(v)}" for k, v in value.items()) + "}"
    raise ExportError(f"cannot write {value!r} ({type(value).__name__}) in {HPARAMS_FILE}")


def mixer_yaml(mixer):
    """The ``mixer`` value: a registry name as is, a class saved by its dotted name as ``!name:``."""
    from pom.mixers import MIXERS

    if isinstance(mixer, str) and (mixer in MIXERS or "." not in mixer):
        return yaml_value(mixer)
    if isinstance(mixer, str):
        return f"!name:{mixer}"
    raise ExportError(f"mixer {mixer!r}: only one mixer for every layer (a registry name or a class) can be exported")


def encoder_yaml(config, output_all_layers=None):
    """The YAML of the feature pipeline, normaliser, CNN front end and encoder
    (``compute_features``, ``normalize``, ``CNN``, ``enc``) for an encoder
    configuration (``encoder_config.json``), with the recipes' fixed CNN layout
    (``hparams/*/base.yaml``). ``output_all_layers``: None leaves the option
    out (fine-tuned models), else the name of the YAML key that sets it."""
    missing = [k for k in ENCODER_KEYS if k not in config]
    if missing:
        raise ExportError(f"the encoder configuration lacks {', '.join(missing)}: not an encoder_config.json of pom")
    cnn = config["cnn_channels"]
    if isinstance(cnn, str):  # "(8,8)" as written on a command line
        cnn = [int(c) for c in cnn.strip("()[] ").split(",") if c.strip()]
    lines = [
        "# Features (as in pre-training and fine-tuning)",
        *(f"{k}: {yaml_value(config[k])}" for k in ("sample_rate", "n_fft", "hop_length", "n_mels", "norm_type")),
        "",
        "# Encoder (pom.encoder.MixerEncoder after SpeechBrain's CNN front end)",
        f"cnn_channels: {yaml_value(tuple(cnn))}",
        f"cnn_output_size: {yaml_value(config['cnn_output_size'])}",
        f"mixer: {mixer_yaml(config['mixer'])}",
        f"mixer_options: {yaml_value(dict(config.get('mixer_options') or {}))}",
        f"positional_encoding: {yaml_value(config.get('positional_encoding'))}",
        *(f"{k}: {yaml_value(config[k])}" for k in ("d_model", "num_layers", "d_ffn", "kernel_size")),
        f"activation: !name:{config['activation']}",
        f"causal: {yaml_value(bool(config.get('causal', False)))}",
    ]
    if output_all_layers is not None:
        lines += [
            "# True: encode_batch(...)['hidden_states'] holds every layer's output [num_layers + 1, B, T, d_model]",
            f"output_all_layers: {yaml_value(bool(output_all_layers))}",
        ]
    lines += ["", ENCODER_MODULES]
    if output_all_layers is not None:
        lines.append("    output_hidden_states: !ref <output_all_layers>")
    return "\n".join(lines) + "\n"


#: Keys of ``encoder_config.json`` that :func:`encoder_yaml` needs.
ENCODER_KEYS = (
    "sample_rate", "n_fft", "hop_length", "n_mels", "norm_type", "cnn_channels", "cnn_output_size", "mixer",
    "d_model", "num_layers", "d_ffn", "kernel_size", "activation",
)  # fmt: skip

ENCODER_MODULES = """\
audio_normalizer: !new:speechbrain.dataio.preprocess.AudioNormalizer
    sample_rate: !ref <sample_rate>

compute_features: !new:speechbrain.lobes.features.Fbank
    sample_rate: !ref <sample_rate>
    n_fft: !ref <n_fft>
    hop_length: !ref <hop_length>
    n_mels: !ref <n_mels>

# Statistics (global normalisation) from normalizer.ckpt, fixed
normalize: !new:speechbrain.processing.features.InputNormalization
    norm_type: !ref <norm_type>

CNN: !new:speechbrain.lobes.models.convolution.ConvolutionFrontEnd
    input_shape: [8, 10, !ref <n_mels>]
    num_blocks: 2
    num_layers_per_block: 1
    out_channels: !ref <cnn_channels>
    kernel_sizes: (3, 3)
    strides: (2, 2)
    residuals: (False, False)

enc: !new:pom.encoder.MixerEncoder
    input_size: !ref <cnn_output_size>
    d_model: !ref <d_model>
    num_layers: !ref <num_layers>
    d_ffn: !ref <d_ffn>
    mixer: !ref <mixer>
    mixer_options: !ref <mixer_options>
    kernel_size: !ref <kernel_size>
    activation: !ref <activation>
    dropout: 0.0
    positional_encoding: !ref <positional_encoding>
    causal: !ref <causal>"""


def pretrainer_yaml(loadables):
    """A ``Pretrainer`` loading ``<name>.ckpt`` of the folder for each ``(name, key)``:
    SpeechBrain's interfaces fetch them from their ``source``, wherever it is."""
    lines = [
        "# Loads <name>.ckpt from the folder given as source to from_hparams",
        "pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer",
        "    loadables:",
    ]
    lines += [f"        {name}: !ref <{key}>" for name, key in loadables]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def staged_folder(out, overwrite=False):
    """Yields a new folder beside ``out`` to write in; renamed to ``out`` when the
    block ends without an error (so ``out`` is complete or absent), else removed.
    An existing ``out`` is replaced only with ``overwrite``."""
    out = os.path.abspath(out)
    if os.path.exists(out) and not overwrite:
        raise ExportError(f"{out} already exists (give a new folder, or --overwrite to replace it)")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ExportError(f"{out} is a file, not a folder (give a folder to export to)")
    if os.path.isdir(out) and os.listdir(out) and not is_exported_folder(out):
        raise ExportError(f"{out} is not an exported model (no {HPARAMS_FILE}, or subfolders): give a new folder")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    stage = f"{out}.partial-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    os.makedirs(stage)
    try:
        yield stage
        if os.path.isdir(out):
            old = f"{stage}.old"
            os.replace(out, old)
            os.replace(stage, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def is_exported_folder(folder):
    """Whether ``folder`` looks like an export (files only, ``hyperparams.yaml`` among them): the
    only kind of existing folder ``--overwrite`` replaces.

    Example
    -------
    >>> import tempfile
    >>> is_exported_folder(tempfile.mkdtemp())
    False
    """
    names = os.listdir(folder)
    return HPARAMS_FILE in names and all(os.path.isfile(os.path.join(folder, n)) for n in names)


def place(src, dst, link=False):
    """Copies ``src`` to ``dst`` (or links it, for a folder used once and deleted)."""
    if link:
        os.symlink(os.path.abspath(src), dst)
    else:
        shutil.copyfile(src, dst)


def example_audio(folders, out_dir, sample_rate=16000, data_root=None, csv_files=()):
    """Writes ``example.<ext>`` into ``out_dir``: an utterance of the first
    readable test/dev CSV (``csv_files``, then the recipes' ``<split>.csv`` in
    ``folders``; ``$data_root`` in their paths read as ``data_root``): the first
    utterance of at most 20 s whose file reads, else a 3 s synthetic tone.
    Returns ``(file name, description, reference transcript or None)``."""
    csvs = list(csv_files)
    for folder in folders:
        csvs += [os.path.join(folder, f"{split}.csv") for split in EXAMPLE_SPLITS]
        csvs += sorted(
            p for p in glob.glob(os.path.join(folder, "*.csv")) if not os.path.basename(p).startswith("train")
        )
    for path in filter(os.path.isfile, dict.fromkeys(csvs)):
        found = _utterance_from_csv(path, data_root)
        if found:
            wav, row = found
            name = "example" + os.path.splitext(wav)[1].lower()
            shutil.copyfile(wav, os.path.join(out_dir, name))
            split = os.path.splitext(os.path.basename(path))[0]
            return name, f"utterance {row.get('ID', '?')} of {split}", row.get("wrd")
    t = torch.arange(int(3 * sample_rate)) / sample_rate
    tone = sum(torch.sin(2 * math.pi * 140.0 * k * t) / k for k in range(1, 6))
    tone = 0.3 * tone * (0.5 + 0.5 * torch.sin(2 * math.pi * 3.0 * t)) / tone.abs().max()
    audio_io.save(os.path.join(out_dir, "example.wav"), tone, sample_rate)
    return "example.wav", "a 3 s synthetic tone (no test utterance of the run could be read)", None


def _utterance_from_csv(path, data_root=None):
    try:
        with open(path, encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    for row in rows:
        wav = row.get("wav") or ""
        if data_root and wav.startswith("$data_root"):
            wav = str(data_root) + wav[len("$data_root") :]
        try:
            if float(row.get("duration") or 0) > EXAMPLE_MAX_SECONDS or not os.path.isfile(wav):
                continue
            if audio_io.info(wav).frames > 0:
                return wav, row
        except (ValueError, RuntimeError):
            continue
    return None


def run_data_folder(folder):
    """The ``data_folder`` of a recipe run, read from its ``hyperparams.yaml`` (None if unknown)."""
    try:
        with open(os.path.join(folder, HPARAMS_FILE), encoding="utf-8") as f:
            value = YAML().load(f).get("data_folder")
    except Exception:  # noqa: BLE001 - no file, or not a mapping: unknown
        return None
    return str(value) if value else None


def front_matter(fields):
    """``fields`` as the YAML front matter that model hubs read (between ``---`` lines)."""
    stream = io.StringIO()
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.dump(fields, stream)
    return "---\n" + stream.getvalue() + "---"


def usage_lines(interface, out, example, savedir=None):
    """The three Python lines that load the exported folder ``out`` and use it on ``example``."""
    module, cls = interface.rsplit(".", 1)
    savedir = savedir or os.path.join(os.path.dirname(os.path.abspath(out)), "pretrained_models", os.path.basename(out))
    name, call = ("asr", "transcribe_file") if cls == "EncoderASR" else ("encoder", "encode_file")
    return [
        f"from {module} import {cls}",
        f'{name} = {cls}.from_hparams(source="{os.path.abspath(out)}", savedir="{savedir}")',
        f'print({name}.{call}("{os.path.join(os.path.abspath(out), example)}"))',
    ]


def load_strictly(interface_cls, folder, savedir, **kwargs):
    """Loads ``folder`` with a SpeechBrain interface, then loads every module of
    its ``pretrainer`` again with ``strict=True`` (SpeechBrain's own loading
    only warns about missing or unexpected tensors). Returns the interface."""
    try:
        model = interface_cls.from_hparams(source=folder, savedir=savedir, **kwargs)
        for name, obj in model.hparams.pretrainer.loadables.items():
            if isinstance(obj, torch.nn.Module) and next(iter(obj.state_dict()), None) is not None:
                path = os.path.join(folder, f"{name}.ckpt")
                obj.load_state_dict(torch.load(path, map_location="cpu"), strict=True)
    except Exception as err:  # noqa: BLE001 - any failure means the folder is not usable
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(
            f"the exported folder {folder} does not load back with {interface_cls.__name__}: {first}"
        ) from None
    return model
