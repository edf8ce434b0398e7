"""pom.convert reads the hyperparams file beside a checkpoint as hyperpyyaml
would (references, copies, arithmetic, includes, placeholders), and checks every
conversion against the source model before writing it.

The files here are written the ways such files are published: like the PoM
authors' example (activation, degree and expansion by reference, placeholders
for their folders) and like SpeechBrain's raw BEST-RQ.yaml (references, a
``!PLACEHOLDER`` data folder), not as SpeechBrain resolves them into a run."""

import json
import os

import pytest
import torch
from test_convert import (
    CHANNELS,
    CNN_OUT,
    DEGREE,
    EXPANSION,
    FFN,
    KERNEL,
    LAYERS,
    NHEAD,
    D,
    authors_run,
    features,
    global_normalizer,
    our_model,
    save_run,
    sb_model,
)

import pom.convert as convert
from pom.convert import CheckpointFormatError, convert_checkpoint
from pom.convert.speechbrain_yaml import Unresolved, read_hyperparams, resolve_hyperparams

GELU = "torch.nn.modules.activation.GELU"

# Written like the PoM authors' published example: their folders are placeholders,
# the output folder interpolates them, and the Conformer reads everything by reference.
AUTHORS_STYLE = """
seed: 1234
degree: {degree}
expand: {expand}
d_model: {d_model}
__set_seed: !apply:speechbrain.utils.seed_everything [!ref <seed>]
data_folder: !PLACEHOLDER
logs_folder: !PLACEHOLDER
output_folder: !ref <logs_folder>/pom_runs/<seed>_<degree>_<expand>_<d_model>
save_folder: !ref <output_folder>/save
precision: fp16
sample_rate: 16000
n_fft: 400
n_mels: 80
nhead: {nhead}
num_encoder_layers: {layers}
num_decoder_layers: 0
d_ffn: !ref <d_model> * {ffn_factor}
transformer_dropout: 0.1
activation: !name:torch.nn.GELU
CNN: !new:speechbrain.lobes.models.convolution.ConvolutionFrontEnd
    input_shape: (8, 10, 80)
    num_blocks: 2
    num_layers_per_block: 1
    out_channels: {channels}
    kernel_sizes: (3, 3)
    strides: (2, 2)
    residuals: (False, False)
Transformer: !new:speechbrain.lobes.models.transformer.TransformerASR.TransformerASR
    input_size: {cnn_out}
    tgt_vocab: 32
    d_model: !ref <d_model>
    nhead: !ref <nhead>
    num_encoder_layers: !ref <num_encoder_layers>
    num_decoder_layers: !ref <num_decoder_layers>
    d_ffn: !ref <d_ffn>
    kernel_size: {kernel}
    dropout: !ref <transformer_dropout>
    activation: !ref <activation>
    conformer_activation: {conformer_activation}
    encoder_module: conformer
    attention_type: {attention}
{mixer_lines}    normalize_before: True
    causal: False
wrapper: !new:speechbrain.lobes.models.transformer.TransformerASR.EncoderWrapper
    transformer: !ref <Transformer>
model: !new:torch.nn.ModuleList
    - [!ref <CNN>, !ref <wrapper>]
compute_features: !new:speechbrain.lobes.features.Fbank
    sample_rate: !ref <sample_rate>
    n_fft: !ref <n_fft>
    n_mels: !ref <n_mels>
normalize: !new:speechbrain.processing.features.InputNormalization
    norm_type: global
    update_until_epoch: 4
checkpointer: !new:speechbrain.utils.checkpoints.Checkpointer
    checkpoints_dir: !ref <save_folder>
    recoverables:
        model: !ref <model>
        normalize: !ref <normalize>
"""


def write_yaml(folder, attention="PoM", conformer_activation="!ref <activation>", name="hyperparams.yaml", **extra):
    """A hyperparams file with references and placeholders, as published (not as a run resolves it)."""
    authors = attention == "PoM"
    text = AUTHORS_STYLE.format(
        degree=DEGREE,
        expand=EXPANSION,
        d_model=D,
        nhead=NHEAD,
        layers=LAYERS,
        ffn_factor=FFN // D,
        channels=tuple(CHANNELS),
        cnn_out=CNN_OUT,
        kernel=KERNEL,
        conformer_activation=conformer_activation,
        attention=attention,
        mixer_lines="    degree: !ref <degree>\n    expand: !copy <expand>\n" if authors else "",
    )
    for key, value in extra.items():
        text = text.replace(f"\n{key}: ", f"\n{key}: {value}\n_replaced_{key}: ", 1)
    path = os.path.join(folder, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def verification(out):
    with open(os.path.join(out, "converted_from.json"), encoding="utf-8") as f:
        return json.load(f)["verification"]


def encoder_outputs(source, converted, batch=2):
    """The source [CNN, EncoderWrapper] and the converted [CNN, MixerEncoder] on one unpadded batch."""
    x = features(batch=batch)
    with torch.no_grad():
        return source[1](source[0](x), torch.ones(batch)), converted[1](converted[0](x), torch.ones(batch))


# ---------------------------------------------------------------------- the file as hyperpyyaml reads it
def test_references_copies_arithmetic_and_placeholders_resolve_as_hyperpyyaml_does(tmp_path):
    path = write_yaml(str(tmp_path))
    settings = read_hyperparams(path)
    assert settings["activation"] == GELU  # conformer_activation: !ref <activation>
    assert (settings["degree"], settings["expand"]) == (DEGREE, EXPANSION)  # !ref and !copy
    assert settings["d_ffn"] == FFN  # !ref <d_model> * 2
    assert (settings["d_model"], settings["nhead"], settings["num_layers"]) == (D, NHEAD, LAYERS)
    assert settings["norm_type"] == "global" and settings["attention_type"] == "PoM"
    tree = resolve_hyperparams(path)
    assert isinstance(tree["output_folder"], Unresolved)  # interpolates a placeholder: harmless until read
    assert "!PLACEHOLDER" in tree["output_folder"].reason
    assert tree["wrapper"]["transformer"] is tree["Transformer"]


def test_a_file_without_conformer_activation_takes_transformer_asr_default(tmp_path):
    path = write_yaml(str(tmp_path))
    with open(path, encoding="utf-8") as f:
        text = f.read().replace("    conformer_activation: !ref <activation>\n", "")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    assert read_hyperparams(path)["activation"] == "speechbrain.nnet.activations.Swish"


def test_included_files_resolve_with_their_overrides(tmp_path):
    with open(tmp_path / "sizes.yaml", "w", encoding="utf-8") as f:
        f.write("width: 8\nd_model: !ref <width> * 4\n")
    with open(tmp_path / "hyperparams.yaml", "w", encoding="utf-8") as f:
        f.write(
            "sizes: !include:sizes.yaml\n    width: 16\n"
            "Transformer: !new:speechbrain.lobes.models.transformer.TransformerASR.TransformerASR\n"
            "    d_model: !ref <sizes[d_model]>\n    conformer_activation: !name:torch.nn.GELU\n"
        )
    assert read_hyperparams(str(tmp_path / "hyperparams.yaml"))["d_model"] == 64


@pytest.mark.parametrize(
    "edit, key, reason",
    [
        ({"activation": "!ref <no_such_key>"}, r"Transformer\[conformer_activation\]", "names no key of the file"),
        ({"d_model": "!ref <data_folder>"}, r"Transformer\[d_model\]", r"!PLACEHOLDER"),
        ({"d_model": "!ref <d_ffn>"}, r"Transformer\[d_model\]", "circular reference"),
        ({"nhead": "!ref <CNN.num_blocks>"}, r"Transformer\[nhead\]", "reads an attribute"),
    ],
)
def test_a_named_setting_that_cannot_be_resolved_is_refused_in_one_line(tmp_path, edit, key, reason):
    run = str(tmp_path / "run")
    authors_run(run, hyperparams=False)
    path = write_yaml(run, **edit)
    with pytest.raises(CheckpointFormatError, match=rf"hyperparams\.yaml: {key} cannot be resolved: .*{reason}") as err:
        convert_checkpoint(run, str(tmp_path / "out"))
    assert "\n" not in str(err.value) and path in str(err.value)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------- conversions beside such files
def test_authors_checkpoint_beside_their_style_of_file_gives_the_source_outputs(tmp_path):
    """The defect this guards against: a file that names the activation by reference
    was read as naming none, and the default (Swish) silently replaced GELU."""
    run = str(tmp_path / "run")
    model, _ = authors_run(run, hyperparams=False)
    write_yaml(run)
    out = convert_checkpoint(run, str(tmp_path / "out"))
    ours, _, config = our_model(out)
    assert config["activation"] == GELU
    assert config["mixer_options"] == {"degree": DEGREE, "expansion": EXPANSION}
    expected, got = encoder_outputs(model, ours)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    record = verification(out)
    assert record["max_abs_difference"] <= 1e-5 and record["tolerance"] == 1e-5
    assert "SourcePoM" in record["source_model"]  # SpeechBrain here cannot build attention_type PoM
    assert "cannot build" in record["hyperparams_not_built"]


def test_speechbrain_checkpoint_beside_a_raw_bestrq_style_file_gives_the_source_outputs(tmp_path):
    run = str(tmp_path / "run")
    sb = sb_model()
    save_run(run, sb, global_normalizer())
    write_yaml(run, attention="RelPosMHAXL")
    out = convert_checkpoint(run, str(tmp_path / "out"))
    ours, _, config = our_model(out)
    assert config["activation"] == GELU and config["mixer"] == "relposmhaxl"
    expected, got = encoder_outputs(sb, ours)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    record = verification(out)
    assert record["source_model"].startswith("the hyperparams file's CNN and TransformerASR blocks")
    assert record["max_abs_difference"] <= 1e-5 and record["batch"][2] == 80


def test_a_misread_setting_is_caught_by_the_source_model_and_nothing_is_written(tmp_path, monkeypatch):
    """If the converter reads a setting wrongly (here: Swish where the file says
    GELU), the source model built by hyperpyyaml from the file disagrees."""
    run = str(tmp_path / "run")
    save_run(run, sb_model(), global_normalizer())
    write_yaml(run, attention="RelPosMHAXL")

    def misread(path):
        return dict(read_hyperparams(path), activation="speechbrain.nnet.activations.Swish")

    monkeypatch.setattr(convert, "read_hyperparams", misread)
    with pytest.raises(CheckpointFormatError, match=r"model\.ckpt: the converted encoder's output differs") as err:
        convert_checkpoint(run, str(tmp_path / "out"))
    assert "\n" not in str(err.value) and "nothing written" in str(err.value)
    assert not (tmp_path / "out").exists()
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_without_a_file_the_source_model_comes_from_the_settings(tmp_path):
    run = str(tmp_path / "run")
    authors_run(run, hyperparams=False)
    out = convert_checkpoint(run, str(tmp_path / "out"), degree=DEGREE)
    record = verification(out)
    assert record["hyperparams_not_built"] == "no hyperparams file"
    assert record["max_abs_difference"] <= 1e-5
