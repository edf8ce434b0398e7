"""pom.export on the tiny runs: a fine-tuning run loads with SpeechBrain's
EncoderASR and gives pom.transcribe's (and the recipe's) log-probabilities and
transcripts; its model card; a pre-trained encoder loads with WaveformEncoder
and gives the recipe's encoder output, every layer's on request; clear errors."""

import csv
import json
import os
import shutil

import pytest
import torch
from finetune_helpers import tiny_finetuned, tiny_pretrained
from ruamel.yaml import YAML
from speechbrain.inference.ASR import EncoderASR
from speechbrain.inference.encoders import WaveformEncoder
from speechbrain.utils.data_utils import batch_pad_right

from pom import export, transcribe
from pom.export.hub import HPARAMS_FILE

ATOL = 1e-5


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, synthetic_librispeech):
    return tiny_finetuned(tmp_path_factory, synthetic_librispeech)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, synthetic_librispeech):
    return tiny_pretrained(tmp_path_factory, synthetic_librispeech)


@pytest.fixture(scope="module")
def exported(finetuned, tmp_path_factory):
    """The fine-tuning run exported with the command line (greedy decoding)."""
    out = tmp_path_factory.mktemp("export") / "asr"
    assert export.main([finetuned, str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def test_clean(finetuned, synthetic_librispeech):
    """Paths of the test-clean utterances the recipe decoded."""
    with open(os.path.join(finetuned, "test-clean.csv"), encoding="utf-8") as f:
        return [row["wav"].replace("$data_root", os.path.join(synthetic_librispeech)) for row in csv.DictReader(f)]


def load(folder, savedir, cls=EncoderASR, **kwargs):
    return cls.from_hparams(source=str(folder), savedir=str(savedir), run_opts={"device": "cpu"}, **kwargs)


def test_exported_folder_and_printed_lines(exported, finetuned, capsys, tmp_path):
    assert sorted(os.listdir(exported)) == sorted(
        [HPARAMS_FILE, "encoder.ckpt", "head.ckpt", "normalizer.ckpt", "tokenizer.ckpt", "example.flac", "README.md"]
    )
    # the weights are the files of the checkpoint the run tested with
    run = export.FinetunedRun(finetuned)
    for name, recoverable in (("encoder", "pt_model"), ("head", "model"), ("normalizer", "normalize")):
        with open(exported / f"{name}.ckpt", "rb") as a, open(run.paramfile(recoverable), "rb") as b:
            assert a.read() == b.read()
    out = tmp_path / "again"
    assert export.main([finetuned, str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-3:]
    assert printed[0] == "from speechbrain.inference.ASR import EncoderASR"
    assert printed[1].startswith(f'asr = EncoderASR.from_hparams(source="{out}", savedir=')
    assert printed[2] == f'print(asr.transcribe_file("{out / "example.flac"}"))'
    namespace = {}
    exec("\n".join(printed[:2]), namespace)  # the printed lines work as they are
    assert isinstance(namespace["asr"].transcribe_file(str(out / "example.flac")), str)


def test_encoder_asr_gives_the_log_probabilities_and_transcripts_of_transcribe(
    exported, finetuned, test_clean, tmp_path
):
    """EncoderASR on the exported folder = pom.transcribe = the recipe's modules
    and checkpoint (log-probabilities, atol 1e-5), one file and a padded batch."""
    asr = load(exported, tmp_path / "savedir")
    transcriber = transcribe.Transcriber(finetuned)
    run = export.FinetunedRun(finetuned)
    one = torch.ones(1)
    for path in test_clean:
        wav = asr.load_audio(path)
        theirs = asr.encode_batch(wav.unsqueeze(0), one)
        torch.testing.assert_close(theirs, transcriber.log_probs(transcriber.load_audio(path)), atol=ATOL, rtol=0)
        torch.testing.assert_close(theirs, run.log_probs(wav.unsqueeze(0), one), atol=ATOL, rtol=0)
        assert " ".join(asr.transcribe_file(path).split()) == transcriber.transcribe(wav)
    wavs, lens = batch_pad_right([asr.load_audio(p) for p in test_clean[:3]])
    torch.testing.assert_close(asr.encode_batch(wavs, lens), transcriber.log_probs(wavs, lens), atol=ATOL, rtol=0)
    words, _ = asr.transcribe_batch(wavs, lens)
    assert [" ".join(w.split()) for w in words] == transcriber.transcribe_batch(wavs, lens)


def test_beam_search_export_gives_the_transcripts_of_transcribe(finetuned, test_clean, tmp_path):
    """--decoding beam: SpeechBrain's CTCBeamSearcher as decoding_function, same transcripts as pom.transcribe."""
    from speechbrain.decoders.ctc import CTCBeamSearcher

    out = tmp_path / "beam"
    assert export.main([finetuned, str(out), "--decoding", "beam", "--beam_size", "4"]) == 0
    asr = load(out, tmp_path / "savedir")
    assert isinstance(asr.decoding_function, CTCBeamSearcher) and asr.decoding_function.beam_size == 4
    transcriber = transcribe.Transcriber(finetuned, decoding="beam", beam_size=4)
    wavs, lens = batch_pad_right([asr.load_audio(p) for p in test_clean])
    words, _ = asr.transcribe_batch(wavs, lens)
    expected = transcriber.transcribe_batch(wavs, lens)
    assert [" ".join(w.split()) for w in words] == expected and any(expected)  # the tiny model emits something


def test_model_card_has_the_front_matter_and_the_wer_table(exported, finetuned):
    text = (exported / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    fields = YAML(typ="safe").load(text.split("---\n")[1])
    assert fields["library_name"] == "speechbrain" and fields["language"] == "en"
    assert {"automatic-speech-recognition", "speechbrain", "pom"} <= set(fields["tags"])
    assert fields["datasets"] == ["librispeech_asr"] and "wer" in fields["metrics"]
    with open(os.path.join(finetuned, "results.json"), encoding="utf-8") as f:
        splits = json.load(f)["splits"]
    reported = {m["name"]: m["value"] for r in fields["model-index"][0]["results"] for m in r["metrics"]}
    for split, values in splits.items():
        assert reported[f"WER {split}"] == values["WER"]
        assert f"| {split} | {values['WER']:.2f} | {values['CER']:.2f} |" in text
    assert 'EncoderASR.from_hparams(source="' in text and "example.flac" in text


def test_lm_export(finetuned, synthetic_librispeech, test_clean, tmp_path):
    """--lm: the n-gram is copied in and used by EncoderASR's beam search, as by pom.transcribe."""
    pytest.importorskip("kenlm")
    pytest.importorskip("pygtrie")
    from pom.lm import build_lm

    lm = str(tmp_path / "3-gram.arpa")
    build_lm(synthetic_librispeech, ["train-clean-100", "train-clean-360", "train-other-500"], lm, order=3)
    out = tmp_path / "lm_model"
    options = ["--decoding", "beam", "--beam_size", "8", "--lm", lm, "--lm_alpha", "3.0", "--lm_beta", "1.0"]
    assert export.main([finetuned, str(out), *options]) == 0
    assert (out / "3-gram.arpa").is_file()
    asr = load(out, tmp_path / "savedir")
    searcher = asr.decoding_function
    assert searcher.kenlm_model is not None and (searcher.alpha, searcher.beta) == (3.0, 1.0)
    transcriber = transcribe.Transcriber(finetuned, decoding="beam", beam_size=8, lm_path=lm, lm_alpha=3.0, lm_beta=1.0)
    wavs, lens = batch_pad_right([asr.load_audio(p) for p in test_clean[:3]])
    words, _ = asr.transcribe_batch(wavs, lens)
    assert [" ".join(w.split()) for w in words] == transcriber.transcribe_batch(wavs, lens)


def recipe_encoder(pretrained):
    """The pre-training run's normaliser, CNN and encoder (its hyperparameters, its last checkpoint)."""
    from speechbrain.utils.checkpoints import torch_recovery

    from pom.recipe.hparams import load_run_hparams
    from pom.recipe.pretrained import find_pretrained

    hparams = load_run_hparams(pretrained)
    found = find_pretrained(pretrained)
    torch_recovery(hparams["model"], found["model"], end_of_epoch=False)
    hparams["normalize"]._load(found["normalize"])
    for key in ("normalize", "CNN", "encoder"):
        hparams[key].eval()
    return hparams


def test_pretrained_encoder_export(pretrained, tmp_path, capsys):
    """WaveformEncoder on the exported folder gives the recipe's encoder output, and every
    layer's output on request (overrides at load time, or --all_layers at export time)."""
    out = tmp_path / "encoder"
    assert export.main([pretrained, str(out)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-3] == (
        "from speechbrain.inference.encoders import WaveformEncoder"
    )
    assert sorted(os.listdir(out)) == sorted(
        [HPARAMS_FILE, "encoder.ckpt", "normalizer.ckpt", "example.flac", "README.md"]
    )
    fields = YAML(typ="safe").load((out / "README.md").read_text(encoding="utf-8").split("---\n")[1])
    assert fields["library_name"] == "speechbrain" and "best-rq" in fields["tags"]

    h = recipe_encoder(pretrained)
    encoder = load(out, tmp_path / "savedir", cls=WaveformEncoder)
    example = str(out / "example.flac")
    wav = encoder.load_audio(example).unsqueeze(0)
    lens = torch.ones(1)
    with torch.no_grad():
        feats = h["normalize"](h["compute_features"](wav), lens)
        expected = h["encoder"](h["CNN"](feats), lens)
        embeddings = encoder.encode_file(example)
        assert embeddings.shape == (1, expected.shape[1], 48)
        torch.testing.assert_close(embeddings, expected, atol=ATOL, rtol=0)
        assert set(encoder.encode_batch(wav, lens)) == {"embeddings"}

        h["encoder"].output_hidden_states = True
        expected_out, expected_hidden = h["encoder"](h["CNN"](feats), lens)
        all_layers = export.export_pretrained(pretrained, tmp_path / "all", all_layers=True)
        for model in (
            load(out, tmp_path / "savedir_all", cls=WaveformEncoder, overrides={"output_all_layers": True}),
            load(all_layers, tmp_path / "savedir_exported_all", cls=WaveformEncoder),
        ):
            outputs = model.encode_batch(wav, lens)
            assert outputs["hidden_states"].shape == (3, 1, expected.shape[1], 48)  # input of layer 1 + 2 layers
            torch.testing.assert_close(outputs["hidden_states"], torch.stack(expected_hidden), atol=ATOL, rtol=0)
            torch.testing.assert_close(outputs["embeddings"], expected_out, atol=ATOL, rtol=0)


def test_mixer_encoder_returns_every_layer_on_request():
    """MixerEncoder's output_hidden_states: off by default; the last layer's output, normed, is the output."""
    from pom.encoder import MixerEncoder

    torch.manual_seed(0)
    enc = MixerEncoder(20, d_model=16, num_layers=3, d_ffn=32, mixer="pom", kernel_size=3).eval()
    src, lens = torch.randn(2, 11, 20), torch.tensor([1.0, 0.7])
    plain = enc(src, lens)
    assert torch.is_tensor(plain)
    enc.output_hidden_states = True
    out, hidden = enc(src, lens)
    assert len(hidden) == 4 and torch.equal(out, plain)
    torch.testing.assert_close(enc.encoder.norm(hidden[-1]), out)


def test_errors_are_one_line(finetuned, pretrained, exported, tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        export.main([str(tmp_path / "nowhere"), str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="already exists .* --overwrite"):
        export.main([finetuned, str(exported)])
    with pytest.raises(SystemExit, match="is not an exported model"):  # --overwrite replaces exports only
        export.main([finetuned, finetuned, "--overwrite"])
    assert os.path.isdir(os.path.join(finetuned, "save"))
    shutil.copytree(exported, tmp_path / "copy")
    (tmp_path / "copy" / "stale.txt").write_text("from an earlier export")
    assert export.main([finetuned, str(tmp_path / "copy"), "--overwrite"]) == 0
    assert not (tmp_path / "copy" / "stale.txt").exists()
    shutil.rmtree(tmp_path / "copy")
    with pytest.raises(SystemExit, match="--lm needs --decoding beam"):
        export.main([finetuned, str(tmp_path / "out"), "--lm", str(exported / "README.md")])
    with pytest.raises(SystemExit, match="--all_layers is for a pre-trained encoder"):
        export.main([finetuned, str(tmp_path / "out"), "--all_layers"])
    with pytest.raises(SystemExit, match="decoding options are for a fine-tuning run"):
        export.main([pretrained, str(tmp_path / "out"), "--decoding", "beam"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="holds no pre-trained encoder"):
        export.main([str(tmp_path / "empty"), str(tmp_path / "out")])
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["empty"]
