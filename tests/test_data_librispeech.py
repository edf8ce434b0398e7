"""LibriSpeech preparation: CSVs match the files, skipping, bad input, interruptions."""

import csv
import glob
import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from pom.data import librispeech, librispeech_folders
from pom.data.librispeech import (
    CSV_HEADER,
    OPT_FILE,
    LibriSpeechFormatError,
    prepare_librispeech,
    read_csv_rows,
)
from pom.data.synthetic import ALL_SPLITS

TRAIN = ["train-clean-100", "train-clean-360", "train-other-500"]
DEV = ["dev-clean", "dev-other"]
TEST = ["test-clean", "test-other"]


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == CSV_HEADER
        return list(reader)


def transcripts(split_dir):
    out = {}
    for trans in glob.glob(os.path.join(split_dir, "*", "*", "*.trans.txt")):
        for line in open(trans, encoding="utf-8"):
            utt_id, words = line.rstrip("\n").split(" ", 1)
            out[utt_id] = (os.path.join(os.path.dirname(trans), utt_id + ".flac"), words)
    return out


@pytest.fixture
def small_root(synthetic_librispeech, tmp_path):
    """A writable copy of dev-clean and test-clean of the synthetic corpus."""
    root = tmp_path / "LibriSpeech"
    for split in ("dev-clean", "test-clean"):
        shutil.copytree(os.path.join(synthetic_librispeech, split), root / split)
    return str(root)


def first_utt(root, split="dev-clean"):
    trans = sorted(glob.glob(os.path.join(root, split, "*", "*", "*.trans.txt")))[0]
    utt_id = open(trans).readline().split(" ", 1)[0]
    return trans, os.path.join(os.path.dirname(trans), utt_id + ".flac")


def test_csvs_match_files(synthetic_librispeech, tmp_path):
    save = str(tmp_path / "csv")
    prepare_librispeech(
        synthetic_librispeech,
        save,
        tr_splits=TRAIN,
        dev_splits=DEV,
        te_splits=TEST,
        merge_lst=TRAIN,
        merge_name="train.csv",
    )
    assert sorted(os.listdir(save)) == sorted([s + ".csv" for s in ALL_SPLITS] + ["train.csv", OPT_FILE])
    for split in ALL_SPLITS:
        rows = read_csv(os.path.join(save, split + ".csv"))
        expected = transcripts(os.path.join(synthetic_librispeech, split))
        assert [r["ID"] for r in rows] == sorted(expected)  # every file once, ID order
        flacs = glob.glob(os.path.join(synthetic_librispeech, split, "*", "*", "*.flac"))
        assert len(rows) == len(flacs)
        for r, read in zip(rows, read_csv_rows(os.path.join(save, split + ".csv"), synthetic_librispeech)):
            wav, words = expected[r["ID"]]
            # relative to $data_root (SpeechBrain's convention), read with data_root = the data folder
            assert r["wav"] == "$data_root/" + os.path.relpath(wav, synthetic_librispeech)
            assert os.path.samefile(read["wav"], wav)
            assert r["wrd"] == words
            assert r["spk_id"] == "-".join(r["ID"].split("-")[:2])
            data, sr = sf.read(read["wav"])
            assert float(r["duration"]) == pytest.approx(len(data) / sr, abs=1e-6)
    merged = read_csv(os.path.join(save, "train.csv"))
    assert merged == sum((read_csv(os.path.join(save, s + ".csv")) for s in TRAIN), [])
    opts = json.load(open(os.path.join(save, OPT_FILE)))
    assert opts["splits"] == list(ALL_SPLITS) and opts["merge_lst"] == TRAIN


def test_skip_when_options_match_redo_when_they_change(small_root, tmp_path, caplog):
    save = str(tmp_path / "csv")
    prepare_librispeech(small_root, save, dev_splits=["dev-clean"])
    csv_path = os.path.join(save, "dev-clean.csv")
    all_rows = read_csv(csv_path)
    mtime = os.path.getmtime(csv_path)
    with caplog.at_level(logging.INFO):
        prepare_librispeech(small_root, save, dev_splits=["dev-clean"])
    assert os.path.getmtime(csv_path) == mtime
    assert "skipping preparation" in caplog.text

    durs = sorted(float(r["duration"]) for r in all_rows)
    lo, hi = durs[1], durs[-2]
    prepare_librispeech(small_root, save, dev_splits=["dev-clean"], avoid_if_shorter_than=lo, avoid_if_longer_than=hi)
    rows = read_csv(csv_path)
    assert 0 < len(rows) <= len(all_rows) - 2
    assert all(lo <= float(r["duration"]) <= hi for r in rows)
    assert json.load(open(os.path.join(save, OPT_FILE)))["avoid_if_longer_than"] == hi


def test_skip_prep_and_run_on_main(small_root, tmp_path):
    from speechbrain.utils.distributed import run_on_main

    save = str(tmp_path / "csv")
    prepare_librispeech(small_root, save, dev_splits=["dev-clean"], skip_prep=True)
    assert not os.path.exists(save)
    run_on_main(
        prepare_librispeech,
        kwargs={
            "data_folder": small_root,
            "save_folder": save,
            "te_splits": ["test-clean"],
            "merge_lst": ["test-clean"],
            "merge_name": "all.csv",
        },
    )
    assert read_csv(os.path.join(save, "all.csv")) == read_csv(os.path.join(save, "test-clean.csv"))


def test_missing_data_folder(tmp_path):
    missing = str(tmp_path / "nowhere" / "LibriSpeech")
    with pytest.raises(FileNotFoundError, match="does not exist") as err:
        prepare_librispeech(missing, str(tmp_path / "csv"), dev_splits=["dev-clean"])
    assert missing in str(err.value) and "train-clean-100" in str(err.value)
    assert not os.path.exists(tmp_path / "csv")


def test_missing_split_lists_present_ones(small_root, tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        prepare_librispeech(small_root, str(tmp_path / "csv"), tr_splits=["train-clean-100"], dev_splits=["dev-clean"])
    msg = str(err.value)
    assert os.path.join(small_root, "train-clean-100") in msg
    assert "folders present there: dev-clean, test-clean" in msg
    # Pointing at the parent of LibriSpeech gets a hint.
    with pytest.raises(FileNotFoundError, match="did you mean"):
        prepare_librispeech(os.path.dirname(small_root), str(tmp_path / "csv"), dev_splits=["dev-clean"])


def test_transcript_line_with_no_audio(small_root, tmp_path):
    trans, flac = first_utt(small_root)
    os.remove(flac)
    with pytest.raises(LibriSpeechFormatError) as err:
        prepare_librispeech(small_root, str(tmp_path / "csv"), dev_splits=["dev-clean"])
    msg = str(err.value)
    assert "transcript line with no audio" in msg and f"{trans}:1" in msg and flac in msg
    assert not os.path.exists(tmp_path / "csv" / "dev-clean.csv")


def test_audio_with_no_transcript_line(small_root, tmp_path):
    trans, flac = first_utt(small_root)
    extra = flac.replace("-0000.flac", "-0999.flac")
    shutil.copy(flac, extra)
    with pytest.raises(LibriSpeechFormatError) as err:
        prepare_librispeech(small_root, str(tmp_path / "csv"), dev_splits=["dev-clean"])
    msg = str(err.value)
    assert "audio with no transcript line" in msg and extra in msg and trans in msg


@pytest.mark.parametrize("kind", ["garbage", "zero_bytes", "zero_frames"])
def test_unreadable_or_empty_audio(small_root, tmp_path, kind):
    _, flac = first_utt(small_root)
    if kind == "garbage":
        open(flac, "wb").write(b"this is not a flac file" * 10)
    elif kind == "zero_bytes":
        open(flac, "wb").close()
    else:
        sf.write(flac, np.zeros(0, dtype="int16"), 16000, format="FLAC")
    with pytest.raises(LibriSpeechFormatError) as err:
        prepare_librispeech(small_root, str(tmp_path / "csv"), dev_splits=["dev-clean"])
    msg = str(err.value)
    expected = {
        "garbage": ["unreadable audio file"],
        "zero_bytes": ["empty audio file"],
        # libsndfile cannot reopen a FLAC holding no frame: either is clear.
        "zero_frames": ["empty audio file", "unreadable audio file"],
    }[kind]
    assert any(f"{e} {flac}" in msg for e in expected), msg
    assert "on_error='skip'" in msg
    assert not glob.glob(str(tmp_path / "csv" / "*"))  # nothing half-written


def test_header_with_no_frames_is_empty(small_root, tmp_path, monkeypatch):
    _, flac = first_utt(small_root)
    real_info = sf.info

    class NoFrames:
        frames, samplerate = 0, 16000

    monkeypatch.setattr(librispeech_folders.sf, "info", lambda p: NoFrames() if p == flac else real_info(p))
    with pytest.raises(LibriSpeechFormatError, match=f"empty audio file {flac}: it holds no samples"):
        prepare_librispeech(small_root, str(tmp_path / "csv"), dev_splits=["dev-clean"])


def test_on_error_skip_counts_in_log(small_root, tmp_path, caplog):
    n_total = len(transcripts(os.path.join(small_root, "dev-clean")))
    trans, flac = first_utt(small_root)
    os.remove(flac)  # transcript line with no audio
    others = sorted(glob.glob(os.path.join(small_root, "dev-clean", "*", "*", "*.flac")))
    open(others[-1], "wb").write(b"garbage")  # unreadable
    shutil.copy(others[0], others[0].replace(".flac", "9.flac"))  # no transcript line
    save = str(tmp_path / "csv")
    with caplog.at_level(logging.WARNING):
        prepare_librispeech(small_root, save, dev_splits=["dev-clean"], on_error="skip")
    rows = read_csv(os.path.join(save, "dev-clean.csv"))
    assert len(rows) == n_total - 2
    assert "skipped 3 problem(s)" in caplog.text
    assert "1 audio with no transcript line" in caplog.text and "1 unreadable audio file" in caplog.text
    with pytest.raises(ValueError, match="on_error must be"):
        prepare_librispeech(small_root, save, dev_splits=["dev-clean"], on_error="ignore")


def test_interrupted_preparation_reruns_to_complete_csvs(small_root, tmp_path, monkeypatch):
    save = str(tmp_path / "csv")
    kwargs = dict(
        dev_splits=["dev-clean"],
        te_splits=["test-clean"],
        merge_lst=["dev-clean", "test-clean"],
        merge_name="train.csv",
    )
    prepare_librispeech(small_root, save, **kwargs)
    reference = {f: open(os.path.join(save, f)).read() for f in os.listdir(save) if f.endswith(".csv")}

    # Interrupt the next preparation (new options) while the second CSV is written.
    real_write = librispeech.write_csv
    calls = []

    def dying_write(path, rows):
        calls.append(path)
        if len(calls) == 2:
            with open(path + librispeech.TMP_MARK + "424242", "w") as f:
                f.write("ID,duration\nhalf")  # a temp file left by a killed process
            raise KeyboardInterrupt
        real_write(path, rows)

    monkeypatch.setattr(librispeech, "write_csv", dying_write)
    with pytest.raises(KeyboardInterrupt):
        prepare_librispeech(small_root, save, avoid_if_longer_than=1000.0, **kwargs)
    assert not os.path.exists(os.path.join(save, OPT_FILE))  # not taken as finished
    monkeypatch.setattr(librispeech, "write_csv", real_write)

    prepare_librispeech(small_root, save, avoid_if_longer_than=1000.0, **kwargs)
    assert sorted(os.listdir(save)) == sorted(list(reference) + [OPT_FILE])  # no temp file left
    for name, text in reference.items():
        assert open(os.path.join(save, name)).read() == text

    # A CSV deleted behind its back is written again.
    os.remove(os.path.join(save, "test-clean.csv"))
    prepare_librispeech(small_root, save, avoid_if_longer_than=1000.0, **kwargs)
    assert open(os.path.join(save, "test-clean.csv")).read() == reference["test-clean.csv"]


def test_concurrent_processes(small_root, tmp_path):
    save = str(tmp_path / "csv")
    code = (
        "import sys; from pom.data.librispeech import prepare_librispeech; "
        "prepare_librispeech(sys.argv[1], sys.argv[2], dev_splits=['dev-clean'], te_splits=['test-clean'])"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, small_root, save]) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    prepare_librispeech(small_root, str(tmp_path / "ref"), dev_splits=["dev-clean"], te_splits=["test-clean"])
    for name in ("dev-clean.csv", "test-clean.csv"):
        assert open(os.path.join(save, name)).read() == open(os.path.join(tmp_path / "ref", name)).read()


def test_regenerated_corpus_is_prepared_again(small_root, tmp_path):
    save = str(tmp_path / "csv")
    prepare_librispeech(small_root, save, dev_splits=["dev-clean"])
    before = read_csv(os.path.join(save, "dev-clean.csv"))
    # Same folder, new content (as after regenerating with another seed).
    test_split = os.path.join(small_root, "test-clean")
    shutil.rmtree(os.path.join(small_root, "dev-clean"))
    shutil.copytree(test_split, os.path.join(small_root, "dev-clean"))
    prepare_librispeech(small_root, save, dev_splits=["dev-clean"])
    after = read_csv(os.path.join(save, "dev-clean.csv"))
    assert [r["ID"] for r in after] == sorted(transcripts(test_split)) != [r["ID"] for r in before]


def test_prepared_csvs_move_with_the_corpus(small_root, tmp_path):
    """The CSVs name audio relative to $data_root: the corpus and the prepared folder moved elsewhere
    (another machine) are read as SpeechBrain reads them, with replacements={"data_root": data_folder}."""
    import speechbrain as sb

    save = str(tmp_path / "csv")
    prepare_librispeech(small_root, save, dev_splits=["dev-clean"])
    assert small_root not in open(os.path.join(save, "dev-clean.csv"), encoding="utf-8").read()
    moved_root, moved_save = str(tmp_path / "other_machine" / "LS"), str(tmp_path / "other_machine" / "csv")
    shutil.copytree(small_root, moved_root)
    shutil.copytree(save, moved_save)
    shutil.rmtree(small_root)
    data = sb.dataio.dataset.DynamicItemDataset.from_csv(
        os.path.join(moved_save, "dev-clean.csv"), replacements={"data_root": moved_root}
    )
    data.add_dynamic_item(sb.dataio.dataio.read_audio, takes="wav", provides="sig")
    data.set_output_keys(["id", "sig", "duration"])
    for item in data:
        assert len(item["sig"]) / 16000 == pytest.approx(float(item["duration"]), abs=1e-3)
    assert [r["ID"] for r in read_csv_rows(os.path.join(moved_save, "dev-clean.csv"), moved_root)] == [
        item["id"] for item in data
    ]
