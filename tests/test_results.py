"""pom.results: results.json files -> the paper's table (Markdown and CSV);
SpeechBrain's ErrorRateStats (what the recipe writes) against jiwer."""

import csv
import io
import json

import jiwer
import pytest
from speechbrain.utils.metric_stats import ErrorRateStats

from pom import results


def write_run(folder, mixer, splits, params=89_300_000, pretrained="/x/pretrain", lm=None):
    folder.mkdir(parents=True)
    data = {"mixer": mixer, "params_encoder": params, "pretrained": pretrained, "lm": lm, "splits": splits}
    (folder / "results.json").write_text(json.dumps(data))
    (folder / "save").mkdir()  # never searched
    return folder


@pytest.fixture
def runs(tmp_path):
    write_run(tmp_path / "ft" / "pom" / "1000", "pom", {
        "dev-clean": {"WER": 7.5, "CER": 2.1}, "dev-other": {"WER": 18.25, "CER": 7.0},
        "test-clean": {"WER": 8.31, "CER": 2.4}, "test-other": {"WER": 19.06, "CER": 7.7},
    })  # fmt: skip
    write_run(tmp_path / "ft" / "summarymixing" / "1000", "summarymixing",
              {"test-clean": {"WER": 9.79, "CER": 3.0}}, params=88_000_000)  # fmt: skip
    write_run(
        tmp_path / "ft" / "pom_random" / "1000", "pom", {"test-clean": {"WER": 60.0, "CER": 30.0}}, pretrained=None
    )
    return tmp_path / "ft"


def test_table_from_a_folder_of_runs(runs, capsys):
    assert results.main([str(runs)]) == 0
    out = capsys.readouterr().out
    markdown, csv_text = out.split("\n\n")[1], out.split("\n\n")[2]
    lines = markdown.splitlines()
    assert lines[0] == "| model | params (M) | dev-clean | dev-other | test-clean | test-other |"
    assert "| pom | 89.3 | 7.50 | 18.25 | 8.31 | 19.06 |" in lines
    assert "| summarymixing | 88.0 | - | - | 9.79 | - |" in lines
    assert "| pom (no pre-training) | 89.3 | - | - | 60.00 | - |" in lines
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert len(rows) == 3
    pom = next(r for r in rows if r["model"] == "pom")
    assert float(pom["test-other"]) == 19.06 and float(pom["params_M"]) == 89.3


def test_cer_csv_only_and_explicit_files(runs, capsys):
    file = runs / "pom" / "1000" / "results.json"
    assert results.main([str(file), "--metric", "CER", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["test-clean"] for r in rows] == ["2.4"]


def test_same_label_runs_are_told_apart(tmp_path):
    a = write_run(tmp_path / "a", "pom", {"test-clean": {"WER": 1.0}})
    b = write_run(tmp_path / "b", "pom", {"test-clean": {"WER": 2.0}})
    labels = [row[0] for row in results.table_rows(results.find_runs([str(a), str(b)]))]
    assert labels == ["pom [a]", "pom [b]"]


def test_paper_table(capsys):
    assert results.main(["--paper", "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert "| PoM | ~95 M | 8.31 | 5.42 | 19.06 | 13.62 |" in out
    assert "| RelPosMHA | ~95 M | 7.96 | 4.89 | 17.61 | 12.13 |" in out


def test_clear_errors(tmp_path, capsys):
    assert results.main([str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert results.main([str(tmp_path / "empty")]) == 1
    assert "no results.json" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "results.json").write_text("{not json")
    assert results.main([str(bad)]) == 1
    assert "not a readable results file" in capsys.readouterr().err


def test_error_rate_stats_match_jiwer():
    """The recipe's WER/CER (ErrorRateStats on whitespace-split words, CER with
    split_tokens) equal jiwer's on the same hypotheses and references."""
    refs = ["THE CAT SAT ON THE MAT", "A QUICK BROWN FOX", "HELLO WORLD", "IT'S ALL GOOD NOW", "ONE"]
    hyps = ["THE CAT SAT ON MAT", "A QUICK BROWN BOX JUMPS", "", "ITS ALL GOOD KNOW", "ONE TWO THREE"]
    ids = [f"u{i}" for i in range(len(refs))]
    wer, cer = ErrorRateStats(), ErrorRateStats(split_tokens=True)
    wer.append(ids, [h.split() for h in hyps], [r.split() for r in refs])
    cer.append(ids, [h.split() for h in hyps], [r.split() for r in refs])
    assert wer.summarize("error_rate") == pytest.approx(100 * jiwer.wer(refs, hyps))
    assert cer.summarize("error_rate") == pytest.approx(100 * jiwer.cer(refs, hyps))
