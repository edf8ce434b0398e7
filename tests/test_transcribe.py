"""pom.transcribe on a tiny fine-tuned model: one line per file, the same
WER as the recipe's test, batches, the real-time factor, resampling, and
clear errors."""

import csv
import glob
import json
import os
import subprocess
import sys

import jiwer
import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
from finetune_helpers import ROOT, tiny_finetuned
from speechbrain.nnet.losses import ctc_loss
from speechbrain.utils.data_utils import batch_pad_right

from pom import transcribe


@pytest.fixture(scope="module")
def model(tmp_path_factory, synthetic_librispeech):
    return tiny_finetuned(tmp_path_factory, synthetic_librispeech)


@pytest.fixture(scope="module")
def test_clean(model, synthetic_librispeech):
    """(path, reference) of the test-clean utterances, as the recipe saw them."""
    with open(os.path.join(model, "test-clean.csv"), encoding="utf-8") as f:
        return [(row["wav"].replace("$data_root", synthetic_librispeech), row["wrd"]) for row in csv.DictReader(f)]


def lines(text):
    return [line.split("\t") for line in text.splitlines() if line]


def test_same_model_and_scores_as_the_recipe(model, test_clean, capsys):
    """The transcriber reproduces the recipe's test-clean CTC loss (its model,
    features and normalisation are the recipe's), and its greedy transcripts
    scored with jiwer give the recipe's WER (ErrorRateStats, batches of one)."""
    with open(os.path.join(model, "results.json"), encoding="utf-8") as f:
        recipe = json.load(f)["splits"]["test-clean"]
    transcriber = transcribe.Transcriber(model)
    losses = []
    for path, ref in test_clean:
        log_probs = transcriber.log_probs(transcriber.load_audio(path))
        tokens = torch.LongTensor([transcriber.tokens.encode(ref)])
        one = torch.ones(1)
        losses.append(float(ctc_loss(log_probs, tokens, one, one, blank_index=0)))
    assert sum(losses) / len(losses) == pytest.approx(recipe["loss"], abs=2e-4)

    paths = [p for p, _ in test_clean]
    assert transcribe.main(["--model", model, *paths]) == 0
    out = lines(capsys.readouterr().out)
    assert [p for p, _ in out] == paths
    hyps, refs = [h for _, h in out], [r for _, r in test_clean]
    assert 100 * jiwer.wer(refs, hyps) == pytest.approx(recipe["WER"], abs=0.01)


def test_folder_input_and_beam_search(model, synthetic_librispeech, capsys):
    folder = os.path.join(synthetic_librispeech, "dev-clean")
    expected = sorted(glob.glob(os.path.join(folder, "*", "*", "*.flac")))
    assert transcribe.main(["--model", model, "--decoding", "beam", "--beam_size", "3", folder]) == 0
    out = lines(capsys.readouterr().out)
    assert [p for p, *_ in out] == expected


def test_batch_sizes_give_the_same_transcripts_and_the_rtf_is_printed(model, synthetic_librispeech, capsys):
    """Batches of 1 and 3 (padded, sorted by duration): same lines, in the order given; the
    real-time factor on stderr."""
    folders = [os.path.join(synthetic_librispeech, split) for split in ("test-clean", "dev-clean")]
    outputs = []
    for batch_size in ("1", "3"):
        assert transcribe.main(["--model", model, "--batch_size", batch_size, *folders]) == 0
        captured = capsys.readouterr()
        outputs.append(lines(captured.out))
        rtf = [line for line in captured.err.splitlines() if line.startswith("Real-time factor: ")]
        assert len(rtf) == 1 and f"files, batch size {batch_size}, cpu)" in rtf[0]
        assert float(rtf[0].split()[2]) > 0
    expected = [p for folder in folders for p in sorted(glob.glob(os.path.join(folder, "*", "*", "*.flac")))]
    assert [p for p, _ in outputs[0]] == expected
    assert outputs[0] == outputs[1]
    with pytest.raises(SystemExit):
        transcribe.main(["--model", model, "--batch_size", "0", expected[0]])


def test_a_padded_batch_gives_the_log_probabilities_of_single_files(model, test_clean):
    """In a padded batch, each file's log-probabilities are its own up to SpeechBrain's padding
    effects (relative lengths rounded to frames, the last frames of the CNN and Fbank)."""
    transcriber = transcribe.Transcriber(model)
    wavs = [transcriber.load_audio(path) for path, _ in test_clean]
    padded, lens = batch_pad_right(wavs)
    batch = transcriber.log_probs(padded, lens)
    for i, wav in enumerate(wavs):
        single = transcriber.log_probs(wav)[0]
        assert (batch[i, : single.shape[0]] - single).abs().max() < 0.1
    longest = max(range(len(wavs)), key=lambda i: wavs[i].numel())  # not padded: the same numbers
    torch.testing.assert_close(batch[longest], transcriber.log_probs(wavs[longest])[0], atol=1e-5, rtol=0)


def test_other_sample_rates_and_stereo_are_converted(model, test_clean, tmp_path, capsys):
    path = test_clean[0][0]
    wav, rate = sf.read(path, dtype="float32")
    assert rate == 16000
    low = torchaudio.functional.resample(torch.from_numpy(wav), 16000, 8000).numpy()
    sf.write(tmp_path / "eight_khz.wav", low, 8000)
    sf.write(tmp_path / "stereo.flac", np.stack([wav, wav], axis=1), 16000)
    transcriber = transcribe.Transcriber(model)
    loaded = transcriber.load_audio(str(tmp_path / "eight_khz.wav"))
    assert loaded.dim() == 1 and abs(loaded.numel() - wav.size) <= 2
    stereo = transcriber.load_audio(str(tmp_path / "stereo.flac"))
    assert torch.allclose(stereo, torch.from_numpy(wav), atol=1e-6)
    assert (
        transcribe.main(["--model", model, str(tmp_path / "eight_khz.wav"), str(tmp_path / "stereo.flac"), path]) == 0
    )
    out = lines(capsys.readouterr().out)
    assert len(out) == 3 and out[1][1] == out[2][1]  # stereo copy = mono original


def test_unreadable_and_missing_files_are_reported_and_skipped(model, test_clean, tmp_path, capsys):
    bad = tmp_path / "not_audio.flac"
    bad.write_text("this is not audio")
    good = test_clean[0][0]
    status = transcribe.main(["--model", model, "--batch_size", "2", str(bad), str(tmp_path / "missing.wav"), good])
    captured = capsys.readouterr()
    assert status == 1
    assert [p for p, *_ in lines(captured.out)] == [good]
    assert f"Error: {bad}: cannot read audio" in captured.err
    assert "missing.wav: no such file" in captured.err


def test_missing_or_unfinished_model_is_a_clear_error(tmp_path, test_clean):
    with pytest.raises(SystemExit, match="does not exist"):
        transcribe.main(["--model", str(tmp_path / "nowhere"), test_clean[0][0]])
    with pytest.raises(SystemExit, match="not a fine-tuning output folder"):
        transcribe.main(["--model", str(tmp_path), test_clean[0][0]])


def test_command_line(model, test_clean):
    proc = subprocess.run(
        [sys.executable, "-m", "pom.transcribe", "--model", model, test_clean[0][0]],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(test_clean[0][0] + "\t") and len(proc.stdout.strip().splitlines()) == 1
    proc = subprocess.run(
        [sys.executable, "-m", "pom.transcribe", "--model", "/nonexistent", "x.flac"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith("Error: model folder")


def test_streaming_mode_chunks_the_encoder(model, test_clean, capsys):
    """One chunk as long as the utterance is the full pass; short chunks really restrict the context."""
    path, _ = test_clean[0]
    full = transcribe.Transcriber(model)
    wav = full.load_audio(path)
    reference = full.log_probs(wav)
    whole = transcribe.Transcriber(model, chunk_size=reference.shape[1])
    torch.testing.assert_close(whole.log_probs(wav), reference, atol=1e-4, rtol=1e-4)
    chunked = transcribe.Transcriber(model, chunk_size=4, left_context_chunks=2)
    assert (chunked.log_probs(wav) - reference).abs().max() > 1e-3
    assert transcribe.main(["--model", model, "--chunk_size", "8", path]) == 0
    assert capsys.readouterr().out.startswith(f"{path}\t")
    with pytest.raises(transcribe.ModelError, match="chunk_size"):
        transcribe.Transcriber(model, chunk_size=0)


def test_streaming_mode_streams_a_causal_encoder(model, test_clean):
    """A causal encoder goes through forward_streaming chunk by chunk and equals its full pass,
    also inside the exported model (its MixerEncoder replaced by a causal one)."""
    from pom.encoder import MixerEncoder

    torch.manual_seed(0)
    encoder = MixerEncoder(
        20, 16, 2, 32, mixer="pom", kernel_size=3, causal=True, positional_encoding="fixed_abs_sine"
    ).eval()
    src = torch.randn(1, 11, 20)
    with torch.no_grad():
        chunked = encoder.forward_chunks(src, torch.ones(1), chunk_size=3)
        torch.testing.assert_close(chunked, encoder(src), atol=1e-5, rtol=1e-5)

    full, streamed = transcribe.Transcriber(model), transcribe.Transcriber(model, chunk_size=2)
    for transcriber in (full, streamed):
        sequential = transcriber.asr.mods.encoder
        old = sequential.enc
        causal = MixerEncoder(
            old.input_projection[0].in_features, old.d_model, 2, 32, mixer="pom", kernel_size=3, causal=True,
            positional_encoding="fixed_abs_sine",
        )  # fmt: skip
        torch.manual_seed(1)
        causal.load_state_dict({k: torch.randn_like(v) * 0.1 for k, v in causal.state_dict().items()})
        sequential.enc = causal.eval()
    wav = full.load_audio(test_clean[0][0])
    torch.testing.assert_close(streamed.log_probs(wav), full.log_probs(wav), atol=1e-4, rtol=1e-4)


def test_beam_search_with_an_lm(model, synthetic_librispeech, test_clean, tmp_path, capsys):
    """--lm gives the beam searcher a word n-gram (KenLM) with the chosen weights; clear errors."""
    pytest.importorskip("kenlm")
    pytest.importorskip("pygtrie")
    from pom.lm import build_lm

    lm = str(tmp_path / "3-gram.arpa")
    build_lm(synthetic_librispeech, ["train-clean-100", "train-clean-360", "train-other-500"], lm, order=3)
    transcriber = transcribe.Transcriber(model, decoding="beam", beam_size=8, lm_path=lm, lm_alpha=3.0, lm_beta=1.0)
    searcher = transcriber.asr.decoding_function
    assert searcher.kenlm_model is not None and (searcher.alpha, searcher.beta) == (3.0, 1.0)
    assert transcribe.Transcriber(model, decoding="beam").asr.decoding_function.kenlm_model is None
    paths = [p for p, _ in test_clean[:3]]
    assert transcribe.main(["--model", model, "--decoding", "beam", "--beam_size", "8", "--lm", lm, *paths]) == 0
    assert [p for p, *_ in lines(capsys.readouterr().out)] == paths
    with pytest.raises(SystemExit, match="--lm needs --decoding beam"):
        transcribe.main(["--model", model, "--lm", lm, paths[0]])
    with pytest.raises(SystemExit, match="does not exist"):
        transcribe.main(["--model", model, "--decoding", "beam", "--lm", str(tmp_path / "none.arpa"), paths[0]])
