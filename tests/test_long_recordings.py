"""Long recordings (pom.inference: the long-form path of pom.transcribe and of the exported
EncoderASR model; python -m benchmarks.long_recordings): the bounded-memory path gives the whole-file
log-probabilities (PoM and attention, global and per-utterance normalisation) without the
whole-file pass's large tensors, segments tile the frames and stitch them back exactly, long
files are decoded alone, and the benchmark's quick mode writes its outputs. Nothing is timed."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from finetune_helpers import ROOT, tiny_finetuned
from speechbrain.decoders import ctc_greedy_decode
from speechbrain.lobes.features import Fbank
from speechbrain.lobes.models.convolution import ConvolutionFrontEnd
from speechbrain.nnet.activations import Softmax
from speechbrain.nnet.linear import Linear
from speechbrain.processing.features import InputNormalization
from torch.utils._python_dispatch import TorchDispatchMode

from pom import export, transcribe
from pom.encoder import MixerEncoder
from pom.inference import CTCModel, pieces
from pom.mixers.base import TokenMixer
from pom.runtime import segments

ATOL = 1e-5
N_MELS = 40
RATE = 16000


class Pointwise(TokenMixer):
    """A mixer that looks at one frame only: a model built with it sees a bounded context."""

    def __init__(self, d_model):
        super().__init__()
        self.linear = torch.nn.Linear(d_model, d_model)

    def forward(self, x, padding_mask=None):
        return self.linear(x)


def front_end(channels=(8, 8)):
    return ConvolutionFrontEnd((8, 10, N_MELS), num_blocks=2, num_layers_per_block=1, out_channels=channels,
                               kernel_sizes=(3, 3), strides=(2, 2), residuals=(False, False))  # fmt: skip


def make_model(mixer="pom", norm="sentence", positions="fixed_abs_sine", layers=2, seed=0, **options):
    """A random-weight fine-tuned-model chain (features, normaliser, CNN, encoder, CTC head) in eval mode."""
    torch.manual_seed(seed)
    causal = mixer == "pom_causal"
    encoder = MixerEncoder(
        N_MELS // 4 * 8, d_model=32, num_layers=layers, d_ffn=64, mixer="pom" if causal else mixer, kernel_size=7,
        causal=causal, positional_encoding=positions, dropout=0.0,
    )  # fmt: skip
    normalize = InputNormalization(norm_type=norm)
    model = CTCModel(
        compute_features=Fbank(n_mels=N_MELS), normalize=normalize, CNN=front_end(), enc=encoder,
        head=Linear(n_neurons=12, input_size=32), log_softmax=Softmax(apply_log=True), **options,
    )  # fmt: skip
    if norm == "global":  # statistics of some features, then fixed
        normalize.train()
        normalize(torch.randn(4, 200, N_MELS) * 4 - 30, torch.ones(4))
    return model.eval()


def speech_like(seconds, seed=0, silence=True):
    """Noise with loud bursts and (``silence``) stretches of digital silence, ``[1, samples]``."""
    generator = torch.Generator().manual_seed(seed)
    wav = 0.05 * torch.randn(1, int(seconds * RATE), generator=generator)
    for start in range(0, wav.shape[1], RATE):
        wav[:, start : start + RATE // 3] *= 10
    if silence:
        wav[:, RATE // 2 : RATE] = 0.0
    return wav


# --------------------------------------------------------------------------- #
# Pieces
# --------------------------------------------------------------------------- #
def test_fbank_in_pieces_equals_the_whole_file():
    """Every frame sees its own samples, and the log-mel clip uses the maximum of the whole file."""
    fbank = Fbank(n_mels=N_MELS)
    wav = speech_like(3.3)
    whole = fbank(wav)
    assert (whole == whole.max() - 80.0).any()  # the top_db clip is active (the silence)
    for piece in (1, 2, 3, 7, 64, whole.shape[1] - 1):
        parts = pieces.fbank_in_pieces(fbank, wav, piece_frames=piece)
        torch.testing.assert_close(parts, whole, atol=1e-4, rtol=0)
    assert fbank.compute_fbanks.top_db == 80.0  # switched back on


def test_cnn_geometry_and_pieces_equal_the_whole_input():
    """Output frame j of two kernel-3, stride-2 blocks reads input frames 4j - 3 .. 4j + 3."""
    cnn = front_end().eval()
    assert pieces.cnn_geometry(cnn) == (3, 4)
    assert pieces.cnn_geometry(torch.nn.Identity()) is None
    torch.manual_seed(0)
    with torch.no_grad():
        for frames in (3, 5, 37, 301):
            feats = torch.randn(1, frames, N_MELS)
            whole = cnn(feats)
            for piece in (4, 8, 12, 200):
                parts = list(pieces.cnn_pieces(cnn, feats, piece_frames=piece))
                assert [start for start, _ in parts] == [piece * k // 4 for k in range(len(parts))]
                torch.testing.assert_close(torch.cat([out for _, out in parts], 1), whole, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- #
# The bounded-memory whole-file path
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("norm", ["global", "sentence"])
@pytest.mark.parametrize("mixer", ["pom", "pom_causal", "relposmhaxl", "mha"])
def test_bounded_path_gives_the_whole_file_log_probabilities(mixer, norm):
    """Small pieces and chunks (features 24 frames, encoder 5 frames) on a 3 s input: the same
    log-probabilities as the plain pass, for PoM (global and causal) and attention mixers."""
    model = make_model(mixer, norm, positions=None if mixer in ("relposmhaxl", "mha") else "fixed_abs_sine",
                       long_form="whole", long_seconds=1.0, piece_frames=24, chunk_frames=5)  # fmt: skip
    wav = speech_like(3.0)
    assert model.long_path(wav.shape[1]) == "whole" and model.long_path(RATE) is None
    with torch.no_grad():
        bounded = model(wav, torch.ones(1))
        plain = model.configure(long_form="auto", long_seconds=60.0)(wav, torch.ones(1))
    assert bounded.shape == plain.shape
    torch.testing.assert_close(bounded, plain, atol=ATOL, rtol=0)


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any operation returns."""

    largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(tensor, torch.Tensor):
                self.largest = max(self.largest, tensor.numel())
        return out


def test_bounded_path_has_no_tensor_growing_with_the_length_but_the_waveform():
    """With pieces of 100 Fbank frames and chunks of 16 encoder frames, the bounded path's largest
    tensor at 24 s is the waveform or one of 8 s; the plain pass's grows with the length (STFT, the
    CNN's first block) to several times the waveform."""
    model = make_model("pom", "global", long_form="whole", long_seconds=1.0, piece_frames=100, chunk_frames=16)
    model.CNN = front_end((128, 8)).eval()  # a wide first block, as the paper's
    largest = {}
    for seconds in (8.0, 24.0):
        wav = speech_like(seconds)
        for name, threshold in (("bounded", 1.0), ("plain", 60.0)):
            with torch.no_grad(), LargestTensor() as mode:
                model.configure(long_seconds=threshold)(wav, torch.ones(1))
            largest[name, seconds] = mode.largest
    samples = int(24.0 * RATE)
    assert largest["bounded", 24.0] <= max(samples, largest["bounded", 8.0])
    assert largest["plain", 24.0] >= 2.5 * largest["plain", 8.0] and largest["plain", 24.0] > 4 * samples


# --------------------------------------------------------------------------- #
# Segments
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("frames,window,overlap", [(1, 5, 2), (5, 5, 2), (6, 5, 2), (100, 30, 8), (101, 30, 0),
                                                   (1000, 750, 100), (757, 750, 100)])  # fmt: skip
def test_segment_plan_tiles_every_frame_once(frames, window, overlap):
    plan = segments.segment_plan(frames, window, overlap)
    assert plan[0][2] == 0 and plan[-1][3] == frames
    for (start, end, keep_start, keep_end), following in zip(plan, plan[1:] + [None]):
        assert 0 <= start <= keep_start < keep_end <= end <= frames and end - start == min(window, frames)
        if following is not None:
            assert following[2] == keep_end  # contiguous: each frame kept once
            assert end - following[0] >= overlap  # neighbours overlap at least `overlap`
            assert end - keep_end >= overlap // 2 and keep_end - following[0] >= overlap // 2  # cut at the middle
    with pytest.raises(ValueError, match="overlap"):
        segments.segment_plan(10, 4, 4)


def test_segments_stitch_back_the_frames_of_a_short_input():
    """A 7 s input in 2 s windows: as many frames as the plain pass, each kept frame the one its window
    gives on its own; an input shorter than a window is the plain pass."""
    model = make_model("pom", "sentence", long_form="segments", segment_seconds=2.0, overlap_seconds=0.6)
    wav = speech_like(7.0)
    with torch.no_grad():
        plain = model.plain(wav)
        stitched = model(wav, torch.ones(1))
        plan = segments.segment_plan(plain.shape[1], 50, 15)  # 2 s and 0.6 s of 40 ms frames
        assert len(plan) == 5 and stitched.shape == plain.shape
        for start, end, keep_start, keep_end in plan:
            alone = model.one(wav[:, start * 640 : min(wav.shape[1], end * 640)])
            torch.testing.assert_close(
                stitched[:, keep_start:keep_end], alone[:, keep_start - start : keep_end - start], atol=ATOL, rtol=0
            )
        assert (stitched - plain).abs().max() > 1e-3  # the windows are utterances of their own
        short = wav[:, : int(1.5 * RATE)]
        assert model.long_path(short.shape[1]) is None
        torch.testing.assert_close(model(short, torch.ones(1)), model.one(short), atol=0, rtol=0)


@pytest.fixture(scope="module")
def run(tmp_path_factory, synthetic_librispeech):
    return tiny_finetuned(tmp_path_factory, synthetic_librispeech)


@pytest.fixture(scope="module")
def utterances(run, synthetic_librispeech):
    """(path, words) of the test-clean utterances the run decoded."""
    with open(os.path.join(run, "test-clean.csv"), encoding="utf-8") as f:
        return [(row["wav"].replace("$data_root", synthetic_librispeech), row["wrd"]) for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def concatenation(utterances, tmp_path_factory):
    """The test-clean utterances concatenated (16-bit FLAC) and its duration."""
    parts = [sf.read(path, dtype="int16")[0] for path, _ in utterances]
    path = str(tmp_path_factory.mktemp("long") / "concatenation.flac")
    sf.write(path, np.concatenate(parts), RATE, subtype="PCM_16")
    return path, sum(len(p) for p in parts) / RATE


def test_segments_of_a_local_model_give_the_whole_file_transcript(concatenation):
    """A model that sees a bounded context (a per-frame mixer, fixed statistics, no absolute
    positions, no log-mel clip at the recording's maximum) gives the same log-probabilities and
    greedy transcript in segments as in one pass over a short concatenation of utterances: the
    windows are stitched at the right frames."""
    path, duration = concatenation
    wav = torch.from_numpy(sf.read(path, dtype="float32")[0]).unsqueeze(0)
    model = make_model(Pointwise, "global", positions=None, long_form="segments", segment_seconds=4.0,
                       overlap_seconds=1.0)  # fmt: skip
    model.compute_features.compute_fbanks.top_db = 1e9
    assert duration > 12 and model.long_path(wav.shape[1]) == "segments"
    with torch.no_grad():
        stitched, plain = model(wav, torch.ones(1)), model.one(wav)
    torch.testing.assert_close(stitched, plain, atol=1e-4, rtol=0)
    tokens = [ctc_greedy_decode(out, torch.ones(1), blank_id=0)[0] for out in (stitched, plain)]
    assert tokens[0] == tokens[1] and len(tokens[0]) > 10


# --------------------------------------------------------------------------- #
# pom.transcribe and the exported model
# --------------------------------------------------------------------------- #
def test_transcriber_whole_path_gives_the_run_log_probabilities(run, concatenation):
    """The tiny fine-tuned PoM run (global normalisation): bounded pieces give the plain pass's
    log-probabilities and transcript on the concatenation."""
    plain = transcribe.Transcriber(run, long_form="whole", long_seconds=1e9)
    bounded = transcribe.Transcriber(run, long_form="whole", long_seconds=1.0)
    bounded.asr.mods.encoder.configure(piece_frames=64, chunk_frames=16)
    wav = plain.load_audio(concatenation[0])
    assert plain.long_path(wav.numel()) is None and bounded.long_path(wav.numel()) == "whole"
    torch.testing.assert_close(bounded.log_probs(wav), plain.log_probs(wav), atol=ATOL, rtol=0)
    assert bounded.transcribe(wav) == plain.transcribe(wav)


def test_long_files_are_decoded_alone_and_in_order(run, utterances, concatenation, monkeypatch, capsys):
    """A file longer than --long_seconds goes in a batch of its own (segments by default), the
    others in batches; the lines keep the order given."""
    sizes = []
    original = transcribe.Transcriber.transcribe_batch

    def spy(self, wavs, wav_lens):
        sizes.append(wavs.shape[0])
        return original(self, wavs, wav_lens)

    monkeypatch.setattr(transcribe.Transcriber, "transcribe_batch", spy)
    short = [path for path, _ in utterances[:2]]
    args = ["--model", run, "--batch_size", "3", "--long_seconds", "10", "--segment_seconds", "6"]
    assert transcribe.main([*args, "--overlap_seconds", "2", short[0], concatenation[0], short[1]]) == 0
    out = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [p for p, *_ in out] == [short[0], concatenation[0], short[1]]
    assert sizes == [1, 2]
    reference = transcribe.Transcriber(run, long_form="segments", segment_seconds=6.0, overlap_seconds=2.0)
    assert out[1][1] == reference.transcribe(reference.load_audio(concatenation[0]))


def test_long_form_options_are_checked(run, utterances):
    with pytest.raises(SystemExit, match="overlap_seconds"):
        transcribe.main(["--model", run, "--segment_seconds", "5", "--overlap_seconds", "5", utterances[0][0]])
    with pytest.raises(transcribe.ModelError, match="long_seconds"):
        transcribe.Transcriber(run, long_seconds=-1.0)
    with pytest.raises(SystemExit):
        transcribe.main(["--model", run, "--long_form", "sometimes", utterances[0][0]])


def test_exported_model_has_the_long_form_path(run, concatenation, tmp_path):
    """hyperparams.yaml builds pom.inference.CTCModel with the long-form keys, which from_hparams overrides."""
    from speechbrain.inference.ASR import EncoderASR

    out = tmp_path / "asr"
    assert export.main([run, str(out)]) == 0
    text = (out / "hyperparams.yaml").read_text()
    assert "encoder: !new:pom.inference.CTCModel" in text and "long_form: auto" in text

    def load(**overrides):
        return EncoderASR.from_hparams(source=str(out), savedir=str(tmp_path / "save"), overrides=overrides,
                                       run_opts={"device": "cpu"})  # fmt: skip

    default, whole = load(), load(long_form="whole", long_seconds=1.0)
    assert isinstance(default.mods.encoder, CTCModel) and default.mods.encoder.long_form == "auto"
    assert (whole.mods.encoder.long_form, whole.mods.encoder.long_seconds) == ("whole", 1.0)
    wav = default.load_audio(concatenation[0]).unsqueeze(0)
    with torch.no_grad():
        torch.testing.assert_close(
            whole.encode_batch(wav, torch.ones(1)), default.mods.encoder.one(wav), atol=ATOL, rtol=0
        )


# --------------------------------------------------------------------------- #
# The benchmark
# --------------------------------------------------------------------------- #
def test_quick_benchmark_writes_its_csv_markdown_and_plot(run, tmp_path):
    out = tmp_path / "long"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.long_recordings", "--model", run, "--quick",
         "--threads", "1", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "long_recordings.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    transcription = [(r["path"], float(r["seconds"])) for r in rows if r["kind"] == "transcribe"]
    assert transcription == [(path, s) for s in (15.0, 30.0) for path in ("utterances", "whole", "segments")]
    encoders = {(r["name"], float(r["seconds"])) for r in rows if r["kind"] == "encoder"}
    assert encoders == {(name, s) for name in ("pom", "summarymixing", "relposmhaxl", "mha") for s in (5.0, 10.0)}
    assert all(r["status"] == "ok" and float(r["peak_rss_MiB"]) > 0 for r in rows), rows
    assert all(r["CER"] != "" for r in rows if r["kind"] == "transcribe")
    assert (out / "long_recordings.png").stat().st_size > 0
    report = (out / "long_recordings.md").read_text()
    assert "| 30 s | segments | ok |" in report and "## Targets" in report
    assert not os.listdir(out / "recordings")  # the recordings are removed unless --keep_audio
    redrawn = tmp_path / "redrawn"  # --from-csv: the plot again, no measurement
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.long_recordings", "--from-csv",
         str(out / "long_recordings.csv"), "--out", str(redrawn)],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(os.listdir(redrawn)) == ["long_recordings.png"]
