"""Importing pre-trained checkpoints made elsewhere (pom.convert): SpeechBrain's
BEST-RQ recipe and the PoM authors' code, into our [CNN, MixerEncoder] layout."""

import json
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hyperpyyaml import resolve_references
from speechbrain.lobes.models.convolution import ConvolutionFrontEnd
from speechbrain.lobes.models.transformer.TransformerASR import EncoderWrapper, TransformerASR
from speechbrain.processing.features import InputNormalization
from speechbrain.utils.checkpoints import Checkpointer
from speechbrain.utils.epoch_loop import EpochCounter

import pom.convert as convert
from pom.convert import CheckpointFormatError, convert_checkpoint, detect_format, speechbrain_conformer
from pom.convert.__main__ import main as convert_main
from pom.convert.pom4speech import SourcePoM
from pom.encoder import MixerEncoder
from pom.recipe.checkpoints import EncoderConfig
from pom.recipe.hparams import load_hparams
from pom.recipe.pretrained import check_pretrained_config, find_pretrained, load_pretrained

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
D, NHEAD, LAYERS, FFN, KERNEL, CHANNELS, N_MELS = 64, 4, 2, 128, 7, (16, 8), 80
CNN_OUT = (N_MELS // 4) * CHANNELS[-1]  # 160
DEGREE, EXPANSION = 3, 2


# ---------------------------------------------------------------------- building foreign runs
def sb_cnn():
    return ConvolutionFrontEnd(
        input_shape=(8, 10, N_MELS),
        num_blocks=2,
        num_layers_per_block=1,
        out_channels=CHANNELS,
        kernel_sizes=(3, 3),
        strides=(2, 2),
        residuals=(False, False),
    )


def sb_transformer(attention_type):
    return TransformerASR(
        tgt_vocab=10,
        input_size=CNN_OUT,
        d_model=D,
        nhead=NHEAD,
        num_encoder_layers=LAYERS,
        num_decoder_layers=0,
        d_ffn=FFN,
        dropout=0.1,
        kernel_size=KERNEL,
        activation=nn.GELU,
        conformer_activation=nn.GELU,
        encoder_module="conformer",
        attention_type=attention_type,
        normalize_before=True,
        causal=False,
    )


def sb_model(kind="speechbrain", seed=0):
    """[CNN, EncoderWrapper(TransformerASR)] as SpeechBrain's BEST-RQ recipe
    (``kind="speechbrain"``), with regular MHA (``"regularMHA"``), or as the
    PoM authors' (``"authors"``: fixed sinusoidal positions, PoM mixers);
    every parameter moved off its initial value."""
    torch.manual_seed(seed)
    attention = {"speechbrain": "RelPosMHAXL", "regularMHA": "regularMHA", "authors": "regularMHA"}[kind]
    transformer = sb_transformer(attention)
    if kind == "authors":
        for layer in transformer.encoder.layers:
            layer.mha_layer = SourcePoM(D, DEGREE, EXPANSION)  # the authors' mixer, their tensor names
    model = nn.ModuleList([sb_cnn(), EncoderWrapper(transformer)])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def features(batch=3, frames=40, seed=1):
    g = torch.Generator().manual_seed(seed)
    return 3.0 * torch.randn(batch, frames, N_MELS, generator=g) + torch.linspace(-4, 4, N_MELS)


def global_normalizer():
    norm = InputNormalization(norm_type="global").train()
    for seed in range(3):
        norm(features(seed=10 + seed), torch.tensor([1.0, 0.8, 0.6]))
    return norm.eval()


HYPERPARAMS = """
seed: 1000
d_model: {d_model}
nhead: {nhead}
num_encoder_layers: {layers}
d_ffn: {ffn}
transformer_dropout: 0.1
activation: !name:torch.nn.GELU
n_mels: 80
sample_rate: 16000
n_fft: 400
hop_length: 10
{extra}
CNN: !new:speechbrain.lobes.models.convolution.ConvolutionFrontEnd
    input_shape: (8, 10, 80)
    num_blocks: 2
    num_layers_per_block: 1
    out_channels: (16, 8)
    kernel_sizes: (3, 3)
    strides: (2, 2)
    residuals: (False, False)
Transformer: !new:speechbrain.lobes.models.transformer.TransformerASR.TransformerASR
    input_size: 160
    tgt_vocab: 10
    d_model: !ref <d_model>
    nhead: !ref <nhead>
    num_encoder_layers: !ref <num_encoder_layers>
    num_decoder_layers: 0
    d_ffn: !ref <d_ffn>
    kernel_size: 7
    dropout: !ref <transformer_dropout>
    activation: !ref <activation>
    conformer_activation: !ref <activation>
    encoder_module: conformer
    attention_type: {attention}
    normalize_before: True
    causal: False
{transformer_extra}
wrapper: !new:speechbrain.lobes.models.transformer.TransformerASR.EncoderWrapper
    transformer: !ref <Transformer>
normalize: !new:speechbrain.processing.features.InputNormalization
    norm_type: {norm_type}
model: !new:torch.nn.ModuleList
    - [!ref <CNN>, !ref <wrapper>]
"""


def write_hyperparams(folder, kind="speechbrain", d_model=D, norm_type="global"):
    """``hyperparams.yaml`` as SpeechBrain writes it into a run's output folder
    (references resolved, ``!new:`` tags kept)."""
    authors = kind == "authors"
    text = HYPERPARAMS.format(
        d_model=d_model,
        nhead=NHEAD,
        layers=LAYERS,
        ffn=FFN,
        norm_type=norm_type,
        attention="PoM" if authors else "RelPosMHAXL",
        extra=f"degree: {DEGREE}\nexpand: {EXPANSION}" if authors else "",
        transformer_extra="    degree: !ref <degree>\n    expand: !ref <expand>" if authors else "",
    )
    with open(os.path.join(folder, "hyperparams.yaml"), "w", encoding="utf-8") as f:
        f.write(resolve_references(text).getvalue())


def save_run(folder, model, norm):
    """Saves a checkpoint as the BEST-RQ recipes do: ``<output>/save/CKPT+*``."""
    Checkpointer(
        os.path.join(folder, "save"), recoverables={"model": model, "normalize": norm, "counter": EpochCounter(10)}
    ).save_checkpoint()
    return folder


# ---------------------------------------------------------------------- loading the conversion
def our_model(folder):
    """[CNN, MixerEncoder] and the normaliser built from a converted folder's
    encoder_config.json as hparams/pretrain/base.yaml builds them, then loaded strictly."""
    config = EncoderConfig.read(os.path.join(folder, "encoder_config.json"))
    cnn = ConvolutionFrontEnd(
        input_shape=[8, 10, config["n_mels"]],
        num_blocks=2,
        num_layers_per_block=1,
        out_channels=tuple(config["cnn_channels"]),
        kernel_sizes=(3, 3),
        strides=(2, 2),
        residuals=(False, False),
    )
    encoder = MixerEncoder(
        config["cnn_output_size"],
        config["d_model"],
        config["num_layers"],
        config["d_ffn"],
        mixer=config["mixer"],
        mixer_options=config["mixer_options"],
        kernel_size=config["kernel_size"],
        activation=convert.import_dotted(config["activation"]),
        positional_encoding=config["positional_encoding"],
        causal=config["causal"],
    )
    model = nn.ModuleList([cnn, encoder])
    model.load_state_dict(torch.load(os.path.join(folder, "model.ckpt"), weights_only=True), strict=True)
    norm = InputNormalization(norm_type=config["norm_type"])
    norm._load(os.path.join(folder, "normalize.ckpt"))
    return model.eval(), norm.eval(), config


# ---------------------------------------------------------------------- (i) SpeechBrain BEST-RQ
@pytest.mark.parametrize("with_hyperparams", [True, False])
def test_speechbrain_bestrq_run_gives_the_same_normaliser_and_encoder(tmp_path, with_hyperparams):
    run = str(tmp_path / "run")
    stale = sb_model(seed=5)
    save_run(run, stale, global_normalizer())  # an older checkpoint: must not be the one converted
    sb, sb_norm = sb_model(seed=0), global_normalizer()
    save_run(run, sb, sb_norm)
    if with_hyperparams:
        write_hyperparams(run)

    out = convert_checkpoint(run, str(tmp_path / "imported"))
    assert sorted(os.listdir(out)) == ["converted_from.json", "encoder_config.json", "model.ckpt", "normalize.ckpt"]
    ours, our_norm, config = our_model(out)
    assert config == {
        "causal": False,
        "mixer": "relposmhaxl",
        "mixer_options": {"nhead": NHEAD, "dropout": 0.1},
        "positional_encoding": None,
        "d_model": D,
        "num_layers": LAYERS,
        "d_ffn": FFN,
        "kernel_size": KERNEL,
        "activation": "torch.nn.modules.activation.GELU",
        "cnn_channels": list(CHANNELS),
        "cnn_output_size": CNN_OUT,
        "n_mels": N_MELS,
        "sample_rate": 16000,
        "n_fft": 400,
        "hop_length": 10,
        "norm_type": "global",
    }
    record = json.loads(open(os.path.join(out, "converted_from.json"), encoding="utf-8").read())
    latest = Checkpointer(os.path.join(run, "save")).find_checkpoint()
    assert record["source"] == str(latest.path) and record["format"] == "speechbrain_bestrq"
    assert (record["hyperparams"] is not None) == with_hyperparams
    assert detect_format(out) == "pom"

    # The normaliser: the same global statistics, the same output.
    stats = torch.load(os.path.join(out, "normalize.ckpt"), weights_only=True)
    assert sorted(stats) == ["count", "glob_mean", "glob_std"] and stats["glob_mean"].shape == (N_MELS,)
    feats, lens = features(), torch.tensor([1.0, 0.7, 0.5])
    with torch.no_grad():
        normed = sb_norm(feats, lens)
        torch.testing.assert_close(our_norm(feats, lens), normed, atol=1e-6, rtol=1e-6)
        x = sb[0](normed)
        torch.testing.assert_close(ours[0](normed), x, atol=0, rtol=0)
        out_batch = ours[1](x, lens)  # [3, 10, D], valid frames 10, 7, 5
        ref_batch = sb[1](x, lens)
    torch.testing.assert_close(out_batch[0], ref_batch[0], atol=1e-5, rtol=1e-5)  # the unpadded utterance
    # SpeechBrain's convolution module reads padded frames (ours does not): each
    # padded utterance equals SpeechBrain's output on that utterance alone.
    for i, valid in ((1, 7), (2, 5)):
        with torch.no_grad():
            alone = sb[1](x[i : i + 1, :valid])
        torch.testing.assert_close(out_batch[i : i + 1, :valid], alone, atol=1e-5, rtol=1e-5)


def test_sentence_normalisation_run_is_recorded_as_such(tmp_path):
    run = save_run(str(tmp_path / "run"), sb_model(), InputNormalization(norm_type="sentence"))
    out = convert_checkpoint(run, str(tmp_path / "imported"))
    _, norm, config = our_model(out)
    assert config["norm_type"] == "sentence"
    stats = torch.load(os.path.join(out, "normalize.ckpt"), weights_only=True)
    assert stats["count"] == 0 and stats["glob_mean"].numel() == 0
    feats = features()
    torch.testing.assert_close(
        norm(feats, torch.ones(3)), InputNormalization(norm_type="sentence")(feats, torch.ones(3))
    )


# ---------------------------------------------------------------------- (ii) the PoM authors' checkpoints
def authors_run(folder, hyperparams=True):
    """A run of the authors' code: SpeechBrain 1.0.x global statistics (with its
    per-speaker dictionaries) and, optionally, hyperparams.yaml."""
    model = sb_model("authors")
    os.makedirs(folder, exist_ok=True)
    torch.save(model.state_dict(), os.path.join(folder, "model.ckpt"))
    g = torch.Generator().manual_seed(3)
    stats = {
        "count": 7,
        "glob_mean": torch.randn(N_MELS, generator=g),
        "glob_std": 1 + torch.rand(N_MELS, generator=g),
        "spk_dict_mean": {},
        "spk_dict_std": {},
        "spk_dict_count": {},
    }
    torch.save(stats, os.path.join(folder, "normalize.ckpt"))
    if hyperparams:
        write_hyperparams(folder, "authors")
    return model, stats


def test_authors_pom_matches_the_equation_computed_from_their_tensors(tmp_path):
    model, _ = authors_run(str(tmp_path / "ckpt"))
    out = convert_checkpoint(str(tmp_path / "ckpt"), str(tmp_path / "imported"))
    ours, _, config = our_model(out)
    assert config["mixer"] == "pom" and config["mixer_options"] == {"degree": DEGREE, "expansion": EXPANSION}
    assert config["positional_encoding"] == "fixed_abs_sine"
    src = model.state_dict()
    x = torch.randn(2, 9, D)
    pad = torch.zeros(2, 9, dtype=torch.bool)
    pad[1, 6:] = True
    for layer in range(LAYERS):
        prefix = f"1.transformer.encoder.layers.{layer}.mha_layer."
        w = {
            name: (src[f"{prefix}mh_pom.{name}.weight"], src[f"{prefix}mh_pom.{name}.bias"])
            for name in ("po_proj", "se_proj", "ag_proj")
        }
        ln_w, ln_b = src[prefix + "layer_norm.weight"], src[prefix + "layer_norm.bias"]
        branches = F.gelu(x @ w["po_proj"][0].T + w["po_proj"][1]).chunk(DEGREE, dim=-1)
        terms = torch.cat([branches[0], branches[0] * branches[1], branches[0] * branches[1] * branches[2]], dim=-1)
        valid = (~pad).unsqueeze(-1).float()
        H = (terms * valid).sum(1, keepdim=True) / valid.sum(1, keepdim=True)  # mean over valid frames
        gate = torch.sigmoid(x @ w["se_proj"][0].T + w["se_proj"][1])
        expected = F.layer_norm((gate * H) @ w["ag_proj"][0].T + w["ag_proj"][1], (D,), ln_w, ln_b)
        with torch.no_grad():
            got = ours[1].encoder.layers[layer].mixer(x, padding_mask=pad)
        torch.testing.assert_close(got[0], expected[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got[1, :6], expected[1, :6], atol=1e-5, rtol=1e-5)


def test_authors_run_gives_the_same_encoder_on_unpadded_input(tmp_path):
    model, stats = authors_run(str(tmp_path / "ckpt"))
    out = convert_checkpoint(str(tmp_path / "ckpt"), str(tmp_path / "imported"))
    ours, norm, config = our_model(out)
    assert config["norm_type"] == "global"
    feats = features(batch=2)
    with torch.no_grad():
        normed = norm(feats, torch.ones(2))
        torch.testing.assert_close(normed, (feats - stats["glob_mean"]) / stats["glob_std"], atol=1e-5, rtol=1e-5)
        ref = model[1](model[0](normed), torch.ones(2))  # positions, PoM layers, convolutions, final norm
        got = ours[1](ours[0](normed), torch.ones(2))
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_authors_degree_comes_from_options_without_hyperparams(tmp_path):
    authors_run(str(tmp_path / "ckpt"), hyperparams=False)
    with pytest.raises(
        CheckpointFormatError, match=r"model\.ckpt: PoM degree and expansion cannot be told apart .*pass degree="
    ) as err:
        convert_checkpoint(str(tmp_path / "ckpt"), str(tmp_path / "a"))
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointFormatError, match=r"degree 4 x expansion 1 \(options\) != 6"):
        convert_checkpoint(str(tmp_path / "ckpt"), str(tmp_path / "a"), degree=4)
    out = convert_checkpoint(str(tmp_path / "ckpt"), str(tmp_path / "b"), degree=DEGREE)
    assert EncoderConfig.read(os.path.join(out, "encoder_config.json"))["mixer_options"] == {
        "degree": 3,
        "expansion": 2,
    }
    out = convert_checkpoint(str(tmp_path / "ckpt"), str(tmp_path / "c"), expansion=3)  # the shapes fit k=2, D=3 too
    assert EncoderConfig.read(os.path.join(out, "encoder_config.json"))["mixer_options"] == {
        "degree": 2,
        "expansion": 3,
    }


# ---------------------------------------------------------------------- (iii) errors
def one_line_error(exc_type, match, *args, **kwargs):
    with pytest.raises(exc_type, match=match) as err:
        convert_checkpoint(*args, **kwargs)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_unknown_or_unsupported_layouts_are_refused_in_one_line(tmp_path):
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    torch.save({"encoder.weight": torch.zeros(2, 2)}, unknown / "model.ckpt")
    one_line_error(
        CheckpointFormatError,
        r"unknown/model\.ckpt: not a BEST-RQ .*1 tensors, e\.g\. encoder\.weight",
        str(unknown),
        str(tmp_path / "o1"),
    )
    (unknown / "model.ckpt").write_text("not a checkpoint")
    one_line_error(
        CheckpointFormatError,
        r"unknown/model\.ckpt: cannot be read as a PyTorch state dict",
        str(unknown),
        str(tmp_path / "o2"),
    )
    (tmp_path / "empty").mkdir()
    one_line_error(
        FileNotFoundError,
        r"empty holds no pre-trained model .*found nothing",
        str(tmp_path / "empty"),
        str(tmp_path / "o3"),
    )
    one_line_error(FileNotFoundError, "does not exist", str(tmp_path / "missing"), str(tmp_path / "o4"))

    mha = save_run(str(tmp_path / "mha"), sb_model("regularMHA"), global_normalizer())
    one_line_error(
        CheckpointFormatError,
        r"Conformer whose token mixer \(mha_layer\.att\) is neither RelPosMHAXL",
        mha,
        str(tmp_path / "o5"),
    )

    other = save_run(str(tmp_path / "other"), sb_model(), global_normalizer())
    write_hyperparams(other, d_model=576)
    one_line_error(
        CheckpointFormatError,
        r"d_model is 64 in the tensors but 576 in .*hyperparams\.yaml",
        other,
        str(tmp_path / "o6"),
    )
    write_hyperparams(other, norm_type="speaker")
    one_line_error(CheckpointFormatError, r"norm_type 'speaker' is not supported", other, str(tmp_path / "o7"))

    global_without_stats = save_run(str(tmp_path / "nostats"), sb_model(), InputNormalization(norm_type="global"))
    write_hyperparams(global_without_stats)
    one_line_error(
        CheckpointFormatError,
        r"normalize\.ckpt: norm_type global but no statistics",
        global_without_stats,
        str(tmp_path / "o8"),
    )
    for name in ("o1", "o2", "o3", "o4", "o5", "o6", "o7", "o8"):
        assert not (tmp_path / name).exists()
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p], "no temporary folder left behind"


def test_existing_output_folder_is_never_clobbered(tmp_path):
    run = save_run(str(tmp_path / "run"), sb_model(), global_normalizer())
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    one_line_error(
        CheckpointFormatError, r"taken already exists and is not a conversion", run, str(taken), overwrite=True
    )
    assert (taken / "notes.txt").read_text() == "mine"


def test_our_own_layout_is_returned_unchanged(tmp_path):
    run = save_run(str(tmp_path / "run"), sb_model(), global_normalizer())
    out = convert_checkpoint(run, str(tmp_path / "imported"))
    assert convert_checkpoint(out, str(tmp_path / "again")) == out
    assert not (tmp_path / "again").exists()


def test_command_line(tmp_path, capsys):
    authors_run(str(tmp_path / "ckpt"), hyperparams=False)
    assert convert_main([str(tmp_path / "ckpt"), str(tmp_path / "out"), "--degree", "3"]) == str(tmp_path / "out")
    printed = capsys.readouterr().out
    assert (
        "PoM authors'" in printed and "mixer pom (degree 3, expansion 2)" in printed and "norm_type global" in printed
    )
    assert "checked: the same encoder output as the source model within" in printed
    convert_main([str(tmp_path / "out"), str(tmp_path / "out3")])
    assert "already in pom-speech's layout: nothing converted" in capsys.readouterr().out
    assert not (tmp_path / "out3").exists()
    with pytest.raises(SystemExit) as err:
        convert_main([str(tmp_path / "ckpt"), str(tmp_path / "out2")])
    assert str(err.value).startswith("Error: ") and "--degree K" in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------------- (iv) find_pretrained
def tiny_finetune_hparams(yaml, norm_type, extra=""):
    sizes = {
        "d_model": D,
        "nhead": NHEAD,
        "num_layers": LAYERS,
        "d_ffn": FFN,
        "kernel_size": KERNEL,
        "cnn_channels": "(16, 8)",
        "cnn_output_size": CNN_OUT,
        "norm_type": norm_type,
    }
    text = "\n".join(f"{k}: {v}" for k, v in sizes.items())
    return load_hparams(
        os.path.join(ROOT, "hparams", "finetune", yaml),
        f"data_folder: x\npretrained_path: none\ndnn_neurons: 32\n{text}\n{extra}",
    )


def test_find_pretrained_converts_once_into_import_dir(tmp_path, monkeypatch):
    run = save_run(str(tmp_path / "run"), sb_model(), global_normalizer())
    with pytest.raises(
        CheckpointFormatError, match=r"is a SpeechBrain BEST-RQ checkpoint .*: give an import folder"
    ) as err:
        convert.find_or_convert(run)
    assert "\n" not in str(err.value)

    imported = str(tmp_path / "ft" / "imported")
    found = convert.find_or_convert(run, import_dir=imported)
    assert found == {
        "dir": imported,
        "model": os.path.join(imported, "model.ckpt"),
        "normalize": os.path.join(imported, "normalize.ckpt"),
        "config": os.path.join(imported, "encoder_config.json"),
    }
    written = os.stat(found["model"]).st_mtime_ns

    def no_second_conversion(*args, **kwargs):
        raise AssertionError("converted twice")

    with monkeypatch.context() as m:
        m.setattr(speechbrain_conformer, "rename_tensors", no_second_conversion)
        assert convert.find_or_convert(run, import_dir=imported) == found
        assert convert.find_or_convert(os.path.join(run, "save"), import_dir=imported) == found
    assert os.stat(found["model"]).st_mtime_ns == written

    # What the fine-tuning recipe does next: compare with its YAML, then load strictly.
    hparams = tiny_finetune_hparams("relposmhaxl.yaml", "global")
    assert check_pretrained_config(found, hparams["encoder_config"], "relposmhaxl.yaml") == 16
    load_pretrained(
        found, hparams["pt_model"], hparams["normalize"], hparams["encoder_config"], str(tmp_path / "collect")
    )
    assert hparams["normalize"].count > 0

    # A newer checkpoint in the run: converted again, in place of the old conversion.
    save_run(run, sb_model(seed=9), global_normalizer())
    again = convert.find_or_convert(run, import_dir=imported)
    assert again["dir"] == imported and os.stat(again["model"]).st_mtime_ns != written
    latest = Checkpointer(os.path.join(run, "save")).find_checkpoint()
    assert convert.read_provenance(imported)["source"] == str(latest.path)


def test_find_pretrained_with_authors_checkpoint_and_pom_finetuning_yaml(tmp_path):
    authors_run(str(tmp_path / "ckpt"))
    found = convert.find_or_convert(str(tmp_path / "ckpt"), import_dir=str(tmp_path / "imported"))
    hparams = tiny_finetune_hparams(
        "pom.yaml", "global", f"mixer_options: {{degree: {DEGREE}, expansion: {EXPANSION}}}"
    )
    assert check_pretrained_config(found, hparams["encoder_config"], "pom.yaml") == 16
    load_pretrained(
        found, hparams["pt_model"], hparams["normalize"], hparams["encoder_config"], str(tmp_path / "collect")
    )


def test_find_pretrained_keeps_its_behaviour_for_our_layout_and_unknown_files(tmp_path):
    run = save_run(str(tmp_path / "run"), sb_model(), global_normalizer())
    ours = tmp_path / "ours"
    convert_checkpoint(run, str(ours))
    found = find_pretrained(str(ours))  # ours: used in place, nothing converted
    assert found["dir"] == str(ours) and found["config"] == str(ours / "encoder_config.json")
    os.remove(ours / "encoder_config.json")  # ours without its configuration: only tensor shapes are checked later
    found = convert.find_or_convert(str(ours), import_dir=str(tmp_path / "unused"))
    assert found["dir"] == str(ours) and found["config"] is None and not (tmp_path / "unused").exists()
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    torch.save({"w": torch.zeros(1)}, unknown / "model.ckpt")  # left to the strict loader, as before
    assert convert.find_or_convert(str(unknown), import_dir=str(tmp_path / "unused"))["dir"] == str(unknown)


# ---------------------------------------------------------------------- fine-tuning from it, no manual step
def test_speechbrain_bestrq_run_fine_tunes_with_the_recipe(tmp_path, synthetic_librispeech):
    """--pretrained_path=<a SpeechBrain BEST-RQ output folder>: the recipe converts it once, fine-tunes,
    tests; the global normalisation statistics are the pre-trained ones, never updated."""
    from finetune_helpers import FINETUNE, TINY_FINETUNE, run

    sb_run = str(tmp_path / "speechbrain_bestrq")
    os.makedirs(sb_run)
    norm = global_normalizer()
    save_run(sb_run, sb_model(seed=3), norm)
    write_hyperparams(sb_run)
    out = tmp_path / "finetune"
    sizes = [
        f"--d_model={D}",
        f"--nhead={NHEAD}",
        f"--num_layers={LAYERS}",
        f"--d_ffn={FFN}",
        f"--kernel_size={KERNEL}",
        "--cnn_channels=(16,8)",
        f"--cnn_output_size={CNN_OUT}",
    ]
    run(FINETUNE, "finetune/relposmhaxl.yaml", [
        f"--data_folder={synthetic_librispeech}", f"--output_folder={out}", f"--pretrained_path={sb_run}",
        "--number_of_epochs=2", "--test_decoding=greedy", "--test_splits=[test-clean]", *sizes, *TINY_FINETUNE,
    ])  # fmt: skip
    imported = out / "imported_encoder"
    assert detect_format(str(imported)) == "pom" and (imported / "converted_from.json").is_file()
    results = json.loads((out / "results.json").read_text())
    assert results["pretrained"] == str(imported) and "WER" in results["splits"]["test-clean"]
    ckpts = sorted((out / "save").glob("CKPT+*"))
    assert ckpts, "no fine-tuning checkpoint"
    for ckpt in ckpts:  # after 2 epochs of training: still the statistics of the SpeechBrain run
        stats = torch.load(ckpt / "normalize.ckpt")
        assert stats["count"] == norm.count
        torch.testing.assert_close(stats["glob_mean"], norm.glob_mean, rtol=0, atol=0)
        torch.testing.assert_close(stats["glob_std"], norm.glob_std, rtol=0, atol=0)
