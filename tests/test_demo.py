"""The ``make demo`` pipeline, shorter: synthesize, pre-train with BEST-RQ,
fine-tune with CTC from the pre-trained encoder and from a random one
(same settings, same seed), evaluate; pre-training must pay."""

import json
import os

import pytest

from pom import demo

#: Shorter than the demo (smaller corpus, model and budgets, train-clean-100 alone); same code and YAML files.
SHORT = [
    "--hours", "0.6",
    "--model", "d_model=96", "num_layers=2", "d_ffn=384",
    "--pretrain", "optimizer_step_limit=300", "warmup_steps=100",
    "--finetune", "number_of_epochs=6", "max_batch_len=10", "best_metric=loss", "test_decoding=greedy",
    "test_splits=[test-clean]", "train_splits=[train-clean-100]",
]  # fmt: skip


@pytest.fixture(scope="module")
def short_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert demo.main(["--out", str(out), "--compare-random", *SHORT, "--efficiency_seconds", "2", "4"]) == 0
    return out


def test_pipeline_outputs(short_demo):
    with open(short_demo / "demo_summary.json", encoding="utf-8") as f:
        summary = json.load(f)
    with_lm = {"finetune +LM"} if demo.lm_available() else set()
    assert set(summary["results"]) == {"finetune", "finetune_random_init"} | with_lm
    assert os.path.isfile(short_demo / "pretrain" / "pretrained" / "model.ckpt")
    with open(short_demo / "finetune" / "results.json", encoding="utf-8") as f:
        assert json.load(f)["pretrained"].startswith(str(short_demo / "pretrain"))
    with open(short_demo / "finetune_random_init" / "results.json", encoding="utf-8") as f:
        assert json.load(f)["pretrained"] is None
    if with_lm:  # the LM is built from the training transcripts and used at test time only
        lm = short_demo / "lm" / f"{demo.LM_ORDER}-gram.arpa"
        with open(short_demo / "finetune" / "results_lm.json", encoding="utf-8") as f:
            results = json.load(f)
        assert results["lm"] == str(lm) and results["beam_size"] == demo.LM["beam_size"]
        assert (short_demo / "finetune" / "wer_test-clean_lm.txt").is_file()


def test_the_demo_model_is_exported_for_speechbrain(short_demo, tmp_path):
    """The demo ends by exporting its fine-tuned model (python -m pom.export --onnx) to <out>/exported."""
    from speechbrain.inference.ASR import EncoderASR

    from pom.runtime.transcriber import OnnxTranscriber

    exported = short_demo / "exported"
    asr = EncoderASR.from_hparams(source=str(exported), savedir=str(tmp_path / "savedir"))
    example = str(next(exported.glob("example.*")))
    text = asr.transcribe_file(example)
    assert isinstance(text, str)
    assert OnnxTranscriber(str(exported)).transcribe_file(example) == " ".join(text.split())  # and for ONNX Runtime


def test_the_demo_ends_with_the_pom_vs_mha_efficiency_plot(short_demo):
    """Step 6: both encoders measured at every length (time, peak memory), parameter-matched, plotted."""
    import csv

    folder = short_demo / "efficiency"
    with open(folder / "long_recordings.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert {(r["name"], float(r["seconds"])) for r in rows} == {
        (n, s) for n in demo.EFFICIENCY_ENCODERS for s in (2.0, 4.0)
    }
    assert all(r["status"] == "ok" and float(r["wall_s"]) > 0 and float(r["peak_rss_MiB"]) > 50 for r in rows)
    params = {r["name"]: float(r["params_M"]) for r in rows}
    assert abs(params["relposmhaxl"] / params["pom"] - 1) < 0.05  # the MHA encoder is parameter-matched to PoM
    assert (folder / "long_recordings.png").stat().st_size > 0
    with open(short_demo / "demo_summary.json", encoding="utf-8") as f:
        assert json.load(f)["times_s"]["efficiency"] > 0


def test_pretraining_beats_random_initialisation(short_demo):
    """Same fine-tuning, same seed and budget: the pre-trained encoder reaches
    a clearly lower validation CTC loss and test-clean CER."""
    from finetune_helpers import train_log

    pre = train_log(short_demo / "finetune")[-1]
    rand = train_log(short_demo / "finetune_random_init")[-1]
    assert pre[2] < rand[2] - 0.05, f"validation CTC loss: pre-trained {pre[2]} vs random {rand[2]}"
    with open(short_demo / "demo_summary.json", encoding="utf-8") as f:
        results = json.load(f)["results"]
    assert results["finetune"]["test-clean"]["CER"] < results["finetune_random_init"]["test-clean"]["CER"]


def test_several_mixers_share_the_corpus_and_are_parameter_matched(tmp_path, capsys):
    """--mixers: the same small pipeline per mixer on one corpus, encoders matched
    to the demo's PoM, and the comparison table (time, memory, parameters, WER)."""
    out = tmp_path / "compare"
    tiny = [
        "--hours", "0.3", "--no-lm", "--no-efficiency", "--mixers", "pom", "mha",
        "--model", "d_model=64", "num_layers=1", "d_ffn=128",
        "--pretrain", "optimizer_step_limit=20", "warmup_steps=10",
        "--finetune", "number_of_epochs=1", "max_batch_len=10", "test_decoding=greedy", "test_splits=[test-clean]",
    ]  # fmt: skip
    assert demo.main(["--out", str(out), *tiny]) == 0
    printed = capsys.readouterr().out
    assert "The paper's comparison in miniature" in printed
    with open(out / "demo_summary.json", encoding="utf-8") as f:
        mixers = json.load(f)["mixers"]
    assert set(mixers) == {"pom", "mha"}
    assert abs(mixers["mha"]["params"] / mixers["pom"]["params"] - 1) < 0.05  # parameter-matched
    assert mixers["pom"]["d_model"] == 64 and mixers["mha"]["d_model"] != 64
    for name, record in mixers.items():
        assert (out / name / "pretrain" / "pretrained" / "model.ckpt").is_file()
        with open(out / name / "finetune" / "results.json", encoding="utf-8") as f:
            result = json.load(f)
        assert result["mixer"] == name and result["d_model"] == record["d_model"]
        assert record["times_s"]["pretrain"] > 0 and record["peak_MiB"]["finetune"] > 50
        assert f"| {name} | {record['params'] / 1e6:.2f} |" in printed
        exported = out / name / "exported"  # the export, and the three lines that load and use it
        assert (exported / "hyperparams.yaml").is_file()
        assert f'asr = EncoderASR.from_hparams(source="{exported}", savedir=' in printed
    assert printed.count("from speechbrain.inference.ASR import EncoderASR") == 2


@pytest.mark.parametrize(
    "finetune, expected", [([], demo.LM_TEST_SPLITS), (["test_splits=[dev-clean]"], "[dev-clean]")]
)
def test_the_lm_pass_decodes_the_test_splits_unless_told_otherwise(monkeypatch, tmp_path, finetune, expected):
    """The second decoding (with the LM) covers LM_TEST_SPLITS; test_splits given with --finetune win."""
    import argparse

    from pom.demo import pipeline

    commands = []
    monkeypatch.setattr(
        pipeline, "run_stage", lambda title, command, threads=1: commands.append(command) or (1.0, 1.0, 1.0)
    )
    args = argparse.Namespace(seed=0, threads=1, compare_random=False, pretrain=[], finetune=finetune)
    demo.run_mixer(
        "pom", args, "DATA", str(tmp_path), demo.MODEL, {}, "LM.arpa", lambda p: dict(x.split("=", 1) for x in p)
    )
    assert len(commands) == 3  # pre-training, fine-tuning, decoding with the LM
    assert "--kenlm_model_path=LM.arpa" in commands[2] and "--kenlm_model_path=LM.arpa" not in commands[1]
    splits = [arg for arg in commands[2] if arg.startswith("--test_splits=")]
    assert splits[-1] == f"--test_splits={expected}"
