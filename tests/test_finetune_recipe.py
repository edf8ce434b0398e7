"""The CTC fine-tuning recipe on the synthetic corpus: a short run whose loss
falls, its outputs, loading (and refusing) pre-trained encoders."""

import json
import os
import shutil

import pytest
import torch
from finetune_helpers import (
    FINETUNE,
    ROOT,
    TINY_FINETUNE,
    TINY_MODEL,
    run,
    tiny_finetuned,
    tiny_pretrained,
    train_log,
)

from pom.bestrq import load_hparams
from pom.finetune import (
    CTCTokens,
    PretrainedMismatchError,
    find_pretrained,
    load_pretrained,
)

SPLITS = ("dev-clean", "dev-other", "test-clean", "test-other")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, synthetic_librispeech):
    return tiny_pretrained(tmp_path_factory, synthetic_librispeech)


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, synthetic_librispeech):
    return tiny_finetuned(tmp_path_factory, synthetic_librispeech)


def tiny_hparams(yaml="pom.yaml", **changes):
    """The fine-tuning hparams with the tiny sizes (no data needed to build them)."""
    sizes = dict(arg[2:].split("=", 1) for arg in TINY_MODEL)
    sizes.update({k: str(v) for k, v in changes.items()})
    text = "\n".join(f"{k}: {v}" for k, v in sizes.items())
    return load_hparams(
        os.path.join(ROOT, "hparams", "finetune", yaml), f"data_folder: x\npretrained_path: none\ndnn_neurons: 32\n{text}"
    )


def test_short_finetuning_run_learns_and_writes_results(finetuned):
    log = train_log(finetuned)
    assert [row[0] for row in log] == [1, 2, 3]
    assert log[-1][1] < log[0][1], f"training CTC loss did not fall: {log}"
    assert log[-1][2] < log[0][2], f"validation CTC loss did not fall: {log}"
    with open(os.path.join(finetuned, "results.json"), encoding="utf-8") as f:
        results = json.load(f)
    assert results["mixer"] == "pom" and results["d_model"] == 48 and results["token_type"] == "char"
    assert results["pretrained"] and os.path.isfile(os.path.join(results["pretrained"], "model.ckpt"))
    assert set(results["splits"]) == set(SPLITS)
    for split in SPLITS:
        with open(os.path.join(finetuned, f"wer_{split}.txt"), encoding="utf-8") as f:
            head = f.readline()
        assert head.startswith("%WER") and float(head.split()[1]) == pytest.approx(results["splits"][split]["WER"], abs=0.01)
        assert os.path.isfile(os.path.join(finetuned, f"cer_{split}.txt"))
    assert results["params_encoder"] > 0 and results["params_total"] > results["params_encoder"]
    assert len(CTCTokens.characters(os.path.join(finetuned, "save", "label_encoder.txt"))) == 29


def test_find_pretrained_accepts_every_layout(pretrained, tmp_path):
    assert find_pretrained("none") is None and find_pretrained("") is None and find_pretrained(None) is None
    latest = find_pretrained(pretrained)
    assert os.path.basename(latest["dir"]).startswith("CKPT+")
    assert latest["config"] and latest["normalize"]
    assert find_pretrained(os.path.join(pretrained, "save"))["dir"] == latest["dir"]
    assert find_pretrained(latest["dir"])["dir"] == latest["dir"]
    exported = find_pretrained(os.path.join(pretrained, "pretrained"))
    assert exported["config"].endswith("encoder_config.json")
    # An output folder whose checkpoints are gone still has its export.
    copy = tmp_path / "out"
    shutil.copytree(os.path.join(pretrained, "pretrained"), copy / "pretrained")
    assert find_pretrained(str(copy))["dir"] == str(copy / "pretrained")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_pretrained(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no pre-trained encoder"):
        find_pretrained(str(tmp_path / "empty"))


def test_load_pretrained_copies_the_weights(pretrained, tmp_path):
    hparams = tiny_hparams()
    found = find_pretrained(pretrained)
    load_pretrained(found, hparams["pt_model"], hparams["normalize"], hparams["encoder_config"], str(tmp_path))
    saved = torch.load(found["model"], map_location="cpu")
    for name, tensor in hparams["pt_model"].state_dict().items():
        assert torch.equal(tensor, saved[name]), name


def test_mismatch_is_refused_with_one_clear_line(pretrained, synthetic_librispeech, tmp_path):
    common = [f"--data_folder={synthetic_librispeech}", f"--pretrained_path={pretrained}", *TINY_FINETUNE]
    sizes = [arg for arg in TINY_MODEL if not arg.startswith("--d_model")]
    proc = run(FINETUNE, "finetune/pom.yaml", [*common, f"--output_folder={tmp_path / 'a'}", *sizes, "--d_model=64"], check=False)
    assert proc.returncode != 0
    last = (proc.stdout + proc.stderr).strip().splitlines()[-1]
    assert last.startswith("Error: the pre-trained encoder in") and "d_model: 48 (checkpoint) != 64" in last
    proc = run(FINETUNE, "finetune/summarymixing.yaml", [*common, f"--output_folder={tmp_path / 'b'}", *TINY_MODEL], check=False)
    assert proc.returncode != 0
    last = (proc.stdout + proc.stderr).strip().splitlines()[-1]
    assert "mixer: 'pom' (checkpoint) != 'summarymixing'" in last
    assert not list(tmp_path.glob("b/save/CKPT+*")), "nothing should be trained after a refusal"
    assert not os.path.exists(tmp_path / "b" / "train.csv"), "the refusal should come before data preparation"


def test_shape_mismatch_without_config_file_is_refused(pretrained, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(os.path.join(pretrained, "pretrained"), ckpt)
    os.remove(ckpt / "encoder_config.json")
    found = find_pretrained(str(ckpt))
    assert found["config"] is None
    hparams = tiny_hparams(d_ffn=80)
    with pytest.raises(PretrainedMismatchError, match="do not fit this model .*size mismatch"):
        load_pretrained(found, hparams["pt_model"], hparams["normalize"], hparams["encoder_config"], str(tmp_path / "c"))


def test_bpe_tokens_option(pretrained, synthetic_librispeech, tmp_path):
    out = tmp_path / "bpe"
    run(FINETUNE, "finetune/pom.yaml", [
        f"--data_folder={synthetic_librispeech}", f"--output_folder={out}", f"--pretrained_path={pretrained}",
        "--token_type=bpe", "--bpe_vocab_size=40", "--number_of_epochs=1", "--test_splits=[test-clean]",
        "--beam_size=4", *TINY_MODEL, *TINY_FINETUNE,
    ])  # fmt: skip
    with open(out / "results.json", encoding="utf-8") as f:
        results = json.load(f)
    assert results["token_type"] == "bpe" and results["decoding"] == "beam"
    assert list(results["splits"]) == ["test-clean"]
    tokens = CTCTokens.load(str(out / "save"), "bpe", 40)
    assert len(tokens) == 40 and tokens.decode(tokens.encode("HELLO THERE")) == "HELLO THERE"
