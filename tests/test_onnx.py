"""ONNX export and the torch-free runtime (pom.export --onnx, pom.runtime, pom.transcribe --onnx):
numpy features and resampling equal SpeechBrain's and torchaudio's; the graph has the
icefall/sherpa-onnx inputs, outputs and metadata, dynamic batch and time, and gives each
utterance of a padded batch its own output and the run's log-probabilities; pom.transcribe
--onnx runs without importing torch and prints pom.transcribe's greedy transcripts, long files
included; the numpy prefix beam search finds the most probable labelling; sherpa-onnx decodes the graph
on its own features. Nothing is timed."""

import csv
import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
from finetune_helpers import ROOT, tiny_finetuned, tiny_pretrained
from speechbrain.lobes.features import Fbank as SpeechBrainFbank

from pom import export, transcribe
from pom.export.onnx import ONNX_FILES
from pom.runtime import ctc
from pom.runtime.audio import resample
from pom.runtime.features import Fbank, save_fbank
from pom.runtime.transcriber import OnnxTranscriber

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
RATE = 16000


def speech_like(seconds, seed=0):
    """Noise with loud bursts and a stretch of digital silence (the top_db clip is active)."""
    rng = np.random.default_rng(seed)
    wav = 0.05 * rng.standard_normal(int(seconds * RATE)).astype(np.float32)
    for start in range(0, len(wav), RATE):
        wav[start : start + RATE // 3] *= 10
    wav[RATE // 2 : RATE] = 0.0
    return wav


@pytest.mark.parametrize("n_mels", [40, 80])
def test_numpy_fbank_equals_speechbrain(n_mels, tmp_path):
    module = SpeechBrainFbank(n_mels=n_mels)
    save_fbank(module, tmp_path / "fbank.npz")
    fbank = Fbank.load(tmp_path / "fbank.npz")
    for seconds in (0.07, 1.0, 3.3):
        wav = speech_like(seconds)
        expected = module(torch.from_numpy(wav).unsqueeze(0))[0].numpy()
        ours = fbank(wav)
        assert ours.shape == expected.shape == (fbank.frames(len(wav)), n_mels)
        np.testing.assert_allclose(ours, expected, atol=1e-3, rtol=0)  # dB; float32 STFT against float64
    assert (expected == expected.max() - 80.0).any()  # the clip was exercised


def test_resampling_equals_torchaudio():
    wav = np.random.default_rng(0).standard_normal(44100).astype(np.float32)
    for orig, new in ((8000, 16000), (44100, 16000), (22050, 16000)):
        expected = torchaudio.functional.resample(torch.from_numpy(wav[:orig]), orig, new).numpy()
        np.testing.assert_allclose(resample(wav[:orig], orig, new), expected, atol=1e-4, rtol=0)


def test_prefix_beam_search_finds_the_most_probable_labelling():
    """Against every path of a 5-frame, 3-label output: the labelling whose paths add up to the
    highest probability (greedy decoding may miss it)."""
    rng = np.random.default_rng(0)
    tokens = ctc.Tokens(["<blk>", "A", "B"])
    found_better_than_greedy = False
    for _ in range(20):
        probs = rng.dirichlet(np.ones(3) * 0.7, size=5)
        totals = {}
        for path in itertools.product(range(3), repeat=5):
            labels = tuple(k for i, k in enumerate(path) if k != 0 and (i == 0 or path[i - 1] != k))
            totals[labels] = totals.get(labels, 0.0) + np.prod(probs[np.arange(5), path])
        best = max(totals, key=totals.get)
        assert tuple(ctc.prefix_beam_search(np.log(probs), beam_size=64, tokens=tokens)) == best
        found_better_than_greedy |= tuple(ctc.greedy(np.log(probs))) != best
    assert found_better_than_greedy


@pytest.fixture(scope="module")
def run(tmp_path_factory, synthetic_librispeech):
    return tiny_finetuned(tmp_path_factory, synthetic_librispeech)


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "model"
    assert export.main([run, str(out), "--onnx"]) == 0
    return str(out)


@pytest.fixture(scope="module")
def test_clean(run, synthetic_librispeech):
    with open(os.path.join(run, "test-clean.csv"), encoding="utf-8") as f:
        return [row["wav"].replace("$data_root", synthetic_librispeech) for row in csv.DictReader(f)]


def test_export_writes_the_models_tokens_and_metadata(exported, run):
    assert set(ONNX_FILES) <= set(os.listdir(exported))
    h = export.FinetunedRun(run).hparams
    model = onnx.load(os.path.join(exported, "model.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["vocab_size"] == str(h["output_neurons"]) and meta["subsampling_factor"] == "4"
    assert meta["normalize_type"] == "" and meta["model_type"] == "pom-speech-ctc" and meta["blank_id"] == "0"
    assert [i.name for i in model.graph.input] == ["x", "x_lens"]
    assert [o.name for o in model.graph.output] == ["log_probs", "log_probs_len"]
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", "T", int(meta["n_mels"])]  # dynamic batch and time
    int8 = onnx.load(os.path.join(exported, "model.int8.onnx"))
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= {n.op_type for n in int8.graph.node}
    assert "MatMulInteger" not in {n.op_type for n in model.graph.node}
    with open(os.path.join(exported, "tokens.txt"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert len(lines) == h["output_neurons"] and lines[0] == "<blk> 0" and "\u2581 1" in lines
    with open(os.path.join(exported, "onnx.json"), encoding="utf-8") as f:
        assert json.load(f)["samples_per_frame"] == 640


def test_padded_batch_gives_each_utterance_alone_and_the_run_log_probabilities(exported, run, test_clean):
    """fp32: every utterance of a padded batch (lengths 0.3 s to twice the longest) gets its output
    alone (1e-4) and the recipe's log-probabilities (1e-3: numpy and torch features differ by
    float rounding); int8 gives as many frames."""
    fbank = Fbank.load(os.path.join(exported, "fbank.npz"))
    wavs = [sf.read(p, dtype="float32")[0] for p in test_clean]
    wavs += [np.concatenate(wavs[:2]), wavs[0][: int(0.3 * RATE)]]
    feats = [fbank(w) for w in wavs]
    lens = np.array([len(f) for f in feats], dtype=np.int64)
    batch = np.zeros((len(feats), lens.max(), fbank.n_mels), dtype=np.float32)
    for i, f in enumerate(feats):
        batch[i, : len(f)] = f
    recipe = export.FinetunedRun(run)
    for name in ("model.onnx", "model.int8.onnx"):
        session = ort.InferenceSession(os.path.join(exported, name), providers=["CPUExecutionProvider"])
        log_probs, out_lens = session.run(None, {"x": batch, "x_lens": lens})
        assert out_lens.tolist() == [-(-n // 4) for n in lens] and log_probs.shape[:2] == (
            len(wavs),
            -(-lens.max() // 4),
        )
        if name == "model.int8.onnx":
            continue
        for i, (f, wav) in enumerate(zip(feats, wavs)):
            alone, _ = session.run(None, {"x": f[None], "x_lens": lens[i : i + 1]})
            np.testing.assert_allclose(log_probs[i, : out_lens[i]], alone[0], atol=1e-4, rtol=0)
            with torch.no_grad():
                ours = recipe.log_probs(torch.from_numpy(wav).unsqueeze(0))[0].numpy()
            np.testing.assert_allclose(alone[0], ours, atol=1e-3, rtol=0)


NO_TORCH = """
import sys
from pom.transcribe import main
status = main(sys.argv[1:])
assert "torch" not in sys.modules, sorted(m for m in sys.modules if m.startswith("torch"))
sys.exit(status)
"""


def test_transcribe_onnx_gives_the_transcripts_of_pom_transcribe_without_torch(exported, run, test_clean, capsys):
    """A subprocess runs pom.transcribe --onnx (fp32 and int8) and checks that torch was never
    imported; its greedy lines are pom.transcribe's (PyTorch) on the same files."""
    assert transcribe.main(["--model", run, "--batch_size", "3", *test_clean]) == 0
    expected = capsys.readouterr().out
    for extra in ([], ["--int8"]):
        proc = subprocess.run(
            [sys.executable, "-c", NO_TORCH, "--onnx", exported, "--batch_size", "3", *extra, *test_clean],
            cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT),
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "Real-time factor" in proc.stderr and "onnxruntime" in proc.stderr
        if not extra:
            assert proc.stdout == expected
        else:
            assert [line.split("\t")[0] for line in proc.stdout.splitlines()] == test_clean


def test_long_recording_in_segments_as_the_pytorch_engine(exported, run, test_clean, tmp_path):
    """A concatenation longer than --long_seconds: the same windows, log-probabilities (1e-3) and
    transcript as pom.transcribe's PyTorch model in segments; beam search and its LM run too."""
    wav = np.concatenate([sf.read(p, dtype="float32")[0] for p in test_clean] * 2)
    path = str(tmp_path / "long.flac")
    sf.write(path, wav, RATE, subtype="PCM_16")
    wav = sf.read(path, dtype="float32")[0]
    options = {"long_seconds": 5.0, "segment_seconds": 4.0, "overlap_seconds": 1.0}
    onnx_asr = OnnxTranscriber(exported, **options)
    torch_asr = transcribe.Transcriber(run, **options)
    assert onnx_asr.long_path(len(wav)) == "segments" == torch_asr.long_path(len(wav))
    ours = onnx_asr.log_probs(wav)
    theirs = torch_asr.log_probs(torch.from_numpy(wav))[0].numpy()
    assert ours.shape == theirs.shape and ours.shape[0] > 100
    np.testing.assert_allclose(ours, theirs, atol=1e-3, rtol=0)
    assert onnx_asr.transcribe_file(path) == torch_asr.transcribe(torch.from_numpy(wav))
    beam = OnnxTranscriber(exported, decoding="beam", beam_size=4, **options)
    assert isinstance(beam.transcribe_file(path), str)


def test_beam_search_with_an_lm(exported, synthetic_librispeech, test_clean, tmp_path, capsys):
    pytest.importorskip("kenlm")
    from pom.lm import build_lm

    lm = str(tmp_path / "3-gram.arpa")
    build_lm(synthetic_librispeech, ["train-clean-100"], lm, order=3)
    words = ctc.WordLM(lm, alpha=1.0, beta=0.0)
    assert words.score(["THE"]) < 0 and words.score(["THE"], final=True) != words.score(["THE"])
    args = ["--onnx", exported, "--decoding", "beam", "--beam_size", "4", "--lm", lm, *test_clean[:2]]
    assert transcribe.main(args) == 0
    assert [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()] == test_clean[:2]


def test_errors_are_one_line(exported, run, test_clean, tmp_path, tmp_path_factory, synthetic_librispeech):
    with pytest.raises(SystemExit, match="has no model.onnx"):
        transcribe.main(["--onnx", str(tmp_path), test_clean[0]])
    with pytest.raises(SystemExit):  # argparse: PyTorch-only options
        transcribe.main(["--onnx", exported, "--chunk_size", "4", test_clean[0]])
    with pytest.raises(SystemExit, match="--lm needs --decoding beam"):
        transcribe.main(["--onnx", exported, "--lm", str(tmp_path / "x.arpa"), test_clean[0]])
    pretrained = tiny_pretrained(tmp_path_factory, synthetic_librispeech)
    with pytest.raises(SystemExit, match="--onnx is for a fine-tuning run"):
        export.main([pretrained, str(tmp_path / "out"), "--onnx"])


def kaldi_fbank_as_sherpa_onnx(wav, n_mels):
    """kaldi-native-fbank with sherpa-onnx's settings for icefall CTC models (its
    FeatureExtractorConfig defaults: no dither, frames not snipped at the edges, mel filters from
    20 Hz to 400 Hz under Nyquist; Povey window, pre-emphasis and DC removal as Kaldi's defaults)."""
    knf = pytest.importorskip("kaldi_native_fbank")
    opts = knf.FbankOptions()
    opts.frame_opts.dither, opts.frame_opts.snip_edges, opts.frame_opts.samp_freq = 0.0, False, RATE
    opts.mel_opts.num_bins, opts.mel_opts.low_freq, opts.mel_opts.high_freq = n_mels, 20.0, -400.0
    fbank = knf.OnlineFbank(opts)
    fbank.accept_waveform(RATE, wav.tolist())
    fbank.input_finished()
    return np.stack([fbank.get_frame(i) for i in range(fbank.num_frames_ready)]).astype(np.float32)


def test_sherpa_onnx_decodes_our_graph_on_its_own_features(exported, test_clean, tmp_path):
    """sherpa-onnx's offline CTC recognizer loads model.onnx and tokens.txt as an icefall CTC model
    and transcribes: its tokens are exactly the greedy decoding of our graph fed kaldi-native-fbank
    features, which are not SpeechBrain's Fbank (pom/export/README.md: what differs). The tiny
    test model mostly emits blanks: its blank bias is lowered so that every file has tokens."""
    sherpa_onnx = pytest.importorskip("sherpa_onnx")
    model = onnx.load(os.path.join(exported, "model.onnx"))
    (bias,) = [t for t in model.graph.initializer if t.name.endswith("ctc_lin.w.bias")]
    values = onnx.numpy_helper.to_array(bias).copy()
    values[0] -= 5.0
    bias.CopyFrom(onnx.numpy_helper.from_array(values, bias.name))
    model_path = str(tmp_path / "model.onnx")
    onnx.save(model, model_path)
    fbank = Fbank.load(os.path.join(exported, "fbank.npz"))
    tokens = os.path.join(exported, "tokens.txt")
    recognizer = sherpa_onnx.OfflineRecognizer.from_zipformer_ctc(
        model=model_path, tokens=tokens, feature_dim=fbank.n_mels
    )
    labels = ctc.Tokens.load(tokens).labels
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    for path in test_clean:
        wav = sf.read(path, dtype="float32")[0]
        stream = recognizer.create_stream()
        stream.accept_waveform(RATE, wav)
        recognizer.decode_stream(stream)
        kaldi = kaldi_fbank_as_sherpa_onnx(wav, fbank.n_mels)
        log_probs, _ = session.run(None, {"x": kaldi[None], "x_lens": np.array([len(kaldi)], dtype=np.int64)})
        assert list(stream.result.tokens) == [labels[i].replace("\u2581", " ") for i in ctc.greedy(log_probs[0])]
        assert len(stream.result.tokens) > 0
        ours = fbank(wav)
        assert abs(len(ours) - len(kaldi)) <= 2 and np.abs(ours[: len(kaldi)] - kaldi[: len(ours)]).max() > 1.0


def test_quick_inference_benchmark(run, tmp_path):
    """benchmarks/inference.py --quick: every backend measured at both lengths, the 40 s recording
    through both transcribers, the int8 CER reported; its table written."""
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.inference", "--quick", "--threads", "1", "--model", run, "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "inference.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    forward = {(r["backend"], float(r["seconds"])) for r in rows if r["kind"] == "forward" and r["status"] == "ok"}
    assert forward == {(b, s) for b in ("torch", "onnx", "int8") for s in (5.0, 10.0)}
    transcribed = [r for r in rows if r["kind"] == "transcribe"]
    assert [r["backend"] for r in transcribed] == ["torch", "onnx", "int8"]
    assert all(r["status"] == "ok" and float(r["peak_rss_MiB"]) > 0 and "words" in r["note"] for r in transcribed)
    report = (out / "inference.md").read_text(encoding="utf-8")
    assert "| demo | int8 |" in report and "int8 against fp32" in report
