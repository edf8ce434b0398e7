"""The synthetic LibriSpeech-layout corpus: layout, audio, text, speakers, determinism."""

import hashlib
import json
import os
import re
import time

import pytest
import soundfile as sf

from pom.data import synthetic
from pom.data.synthetic import (
    ALL_SPLITS,
    MARKER,
    TINY_HOURS,
    load_sentences,
    make_synthetic_librispeech,
    plan_corpus,
)

UTT_RE = re.compile(r"^(\d+)-(\d+)-(\d{4})\.flac$")


def _files(root, pattern):
    found = []
    for dirpath, _, names in os.walk(root):
        found += [os.path.join(dirpath, n) for n in names if n.endswith(pattern)]
    return sorted(found)


def _digest(root):
    h = hashlib.sha256()
    for path in _files(root, ""):
        if os.path.basename(path) == MARKER:
            continue  # holds the generation time
        h.update(os.path.relpath(path, root).encode())
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def test_layout_audio_and_transcripts(synthetic_librispeech):
    root = synthetic_librispeech
    assert os.path.basename(root) == "LibriSpeech"
    assert sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))) == sorted(ALL_SPLITS)
    for split in ALL_SPLITS:
        flacs = _files(os.path.join(root, split), ".flac")
        assert len(flacs) >= 4, split
        lines = {}
        for trans in _files(os.path.join(root, split), ".trans.txt"):
            spk, chap = (
                os.path.basename(os.path.dirname(os.path.dirname(trans))),
                os.path.basename(os.path.dirname(trans)),
            )
            assert os.path.basename(trans) == f"{spk}-{chap}.trans.txt"
            for line in open(trans, encoding="utf-8"):
                utt_id, words = line.rstrip("\n").split(" ", 1)
                assert utt_id.startswith(f"{spk}-{chap}-")
                assert re.fullmatch(r"[A-Z']+( [A-Z']+)*", words), words
                lines[os.path.join(os.path.dirname(trans), utt_id + ".flac")] = words
        assert sorted(lines) == flacs  # one transcript line per audio file
        for path in flacs[:5]:
            m = UTT_RE.match(os.path.basename(path))
            assert m, path
            spk_dir = os.path.basename(os.path.dirname(os.path.dirname(path)))
            assert (m.group(1), m.group(2)) == (spk_dir, os.path.basename(os.path.dirname(path)))
            info = sf.info(path)
            assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
            assert 0.5 < info.frames / info.samplerate < 30
    info = json.load(open(os.path.join(root, MARKER)))
    assert info["options"]["splits"] == list(ALL_SPLITS)
    assert 0.05 < info["audio_hours"] < 0.15


def test_speakers_disjoint_between_splits(synthetic_librispeech):
    speakers = {s: set(os.listdir(os.path.join(synthetic_librispeech, s))) for s in ALL_SPLITS}
    train = set().union(*(speakers[s] for s in ALL_SPLITS if s.startswith("train")))
    for split in ALL_SPLITS:
        if not split.startswith("train"):
            assert not speakers[split] & train, split
    # Voices too, not only the numbers: (voice, variant, pitch) never repeats.
    plan = plan_corpus(hours=TINY_HOURS, seed=0)
    keys = [(s["voice"], s["variant"], s["pitch"]) for s in plan["speakers"]]
    assert len(keys) == len(set(keys))
    assert len({s["id"] for s in plan["speakers"]}) == len(plan["speakers"])


def test_tiny_default_proportions_text_and_difficulty():
    plan = plan_corpus(hours=TINY_HOURS, seed=0)
    utts = plan["utterances"]
    count = {s: sum(u["split"] == s for u in utts) for s in ALL_SPLITS}
    for split in ("dev-clean", "dev-other", "test-clean", "test-other"):
        assert count[split] >= 30, count
    assert count["train-clean-100"] < count["train-clean-360"] + count["train-other-500"]
    assert sum(count[s] for s in ALL_SPLITS if s.startswith("train")) > 0.7 * len(utts)
    # Real English with a vocabulary of thousands of words.
    assert len(load_sentences()) > 30000
    assert len({w for u in utts for w in u["wrd"].split()}) > 2000
    # Dev/test sentences are never training sentences.
    train_text = {u["wrd"] for u in utts if u["split"].startswith("train")}
    assert not train_text & {u["wrd"] for u in utts if u["split"] == "test-clean"}

    # *-other: faster speech, louder noise.
    def mean(split_kind, key):
        vals = [u[key] for u in utts if ("other" in u["split"]) == (split_kind == "other")]
        return sum(vals) / len(vals)

    assert mean("other", "speed") > mean("clean", "speed") + 30
    assert mean("other", "snr_db") < 20 < mean("clean", "snr_db")


def test_size_scales_with_hours():
    small = plan_corpus(hours=0.5, seed=0)["utterances"]
    large = plan_corpus(hours=2.0, seed=0)["utterances"]
    assert 3.0 < len(large) / len(small) < 5.0


def test_deterministic_across_workers_and_seeds(tmp_path):
    kw = dict(hours=0.02, splits=["dev-other", "test-clean"], progress=False)
    a = make_synthetic_librispeech(str(tmp_path / "a"), seed=3, num_workers=1, **kw)
    b = make_synthetic_librispeech(str(tmp_path / "b"), seed=3, num_workers=2, **kw)
    c = make_synthetic_librispeech(str(tmp_path / "c"), seed=4, num_workers=2, **kw)
    assert sorted(os.listdir(a)) == ["SPEAKERS.TXT", MARKER, "dev-other", "test-clean"]
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)
    assert plan_corpus(0.3, seed=7) == plan_corpus(0.3, seed=7)
    # A split's content does not depend on which other splits are asked for.
    sub = plan_corpus(0.3, seed=7, splits=["dev-clean"])["utterances"]
    assert sub == [u for u in plan_corpus(0.3, seed=7)["utterances"] if u["split"] == "dev-clean"]


def test_rerun_skips_and_interrupted_run_regenerates(tmp_path):
    kw = dict(hours=0.005, splits=["dev-clean"], progress=False, num_workers=1)
    root = make_synthetic_librispeech(str(tmp_path), **kw)
    digest = _digest(root)
    marker_mtime = os.path.getmtime(os.path.join(root, MARKER))
    time.sleep(0.01)
    assert make_synthetic_librispeech(str(tmp_path), **kw) == root
    assert os.path.getmtime(os.path.join(root, MARKER)) == marker_mtime

    # Interrupted run: in-progress flag left and a file missing.
    open(os.path.join(root, synthetic.IN_PROGRESS), "w").close()
    os.remove(_files(root, ".flac")[0])
    make_synthetic_librispeech(str(tmp_path), **kw)
    assert _digest(root) == digest
    assert not os.path.exists(os.path.join(root, synthetic.IN_PROGRESS))


def test_refuses_to_overwrite_foreign_folder(tmp_path):
    os.makedirs(tmp_path / "LibriSpeech" / "dev-clean")
    with pytest.raises(FileExistsError, match="not a synthetic corpus"):
        make_synthetic_librispeech(str(tmp_path), hours=0.005, splits=["dev-clean"], progress=False)
    assert os.path.isdir(tmp_path / "LibriSpeech" / "dev-clean")


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown split"):
        plan_corpus(1.0, splits=["train-clean-1000"])
    with pytest.raises(ValueError, match="hours must be positive"):
        plan_corpus(0)


def test_cli(tmp_path, capsys):
    synthetic.main(
        [
            "--out",
            str(tmp_path),
            "--hours",
            "0.005",
            "--seed",
            "1",
            "--splits",
            "test-other",
            "--no-progress",
            "--workers",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert "utterances" in out and str(tmp_path) in out
    assert _files(str(tmp_path / "LibriSpeech" / "test-other"), ".flac")
