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
    recipe_check,
    run,
    tiny_finetuned,
    tiny_pretrained,
    train_log,
)

from pom.recipe.checkpoints import final_checkpoint
from pom.recipe.hparams import load_hparams, load_run_hparams
from pom.recipe.pretrained import PretrainedMismatchError, find_pretrained, load_pretrained
from pom.recipe.tokens import CTCTokens, transcript_characters

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
        os.path.join(ROOT, "hparams", "finetune", yaml),
        f"data_folder: x\npretrained_path: none\ndnn_neurons: 32\n{text}",
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
        assert head.startswith("%WER") and float(head.split()[1]) == pytest.approx(
            results["splits"][split]["WER"], abs=0.01
        )
        assert os.path.isfile(os.path.join(finetuned, f"cer_{split}.txt"))
    assert results["params_encoder"] > 0 and results["params_total"] > results["params_encoder"]
    # the labels: blank and the characters of the training transcripts
    tokens = CTCTokens.characters(os.path.join(finetuned, "save", "label_encoder.txt"))
    assert tokens.vocab_list()[1:] == list(transcript_characters(os.path.join(finetuned, "train.csv")))
    assert results["vocabulary_size"] == len(tokens)
    # the run's configuration is its hyperparams.yaml alone (no other record), and it rebuilds the model
    assert not [name for name in os.listdir(finetuned) if name.startswith("hparams")]
    hparams = load_run_hparams(finetuned)
    assert hparams["ctc_lin"].w.out_features == len(tokens) and hparams["d_model"] == 48
    assert results["checkpoint"] == os.path.relpath(
        str(final_checkpoint(os.path.join(finetuned, "save"), "WER").path), os.path.join(finetuned, "save")
    )
    assert results["averaged_checkpoints"] is None  # avg_checkpoints: 1, the best checkpoint is tested


def test_librispeech_transcripts_give_the_29_labels(tmp_path):
    """The vocabulary of LibriSpeech's training transcripts (space, apostrophe, A-Z) is the 29 labels
    of the recipe before the vocabulary came from the data: same file, same indices."""
    train = tmp_path / "train.csv"
    train.write_text(
        "ID,duration,wav,wrd\n"
        "1-1-1,1.0,$data_root/a.flac,THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG\n"
        "1-1-2,1.0,$data_root/b.flac,IT'S A SPHINX OF BLACK QUARTZ JUDGE MY VOW\n",
        encoding="utf-8",
    )
    built = CTCTokens.characters(str(tmp_path / "label_encoder.txt"), train_csv=str(train))
    before = CTCTokens.characters(str(tmp_path / "fixed.txt"))  # no transcripts: LibriSpeech's characters
    assert len(built) == 29 and built.vocab_list() == before.vocab_list()
    assert (tmp_path / "label_encoder.txt").read_text() == (tmp_path / "fixed.txt").read_text()


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
    proc = run(
        FINETUNE,
        "finetune/pom.yaml",
        [*common, f"--output_folder={tmp_path / 'a'}", *sizes, "--d_model=64"],
        check=False,
    )
    assert proc.returncode != 0
    last = (proc.stdout + proc.stderr).strip().splitlines()[-1]
    assert last.startswith("Error: the pre-trained encoder in") and "d_model: 48 (checkpoint) != 64" in last
    proc = run(
        FINETUNE,
        "finetune/summarymixing.yaml",
        [*common, f"--output_folder={tmp_path / 'b'}", *TINY_MODEL],
        check=False,
    )
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
        load_pretrained(
            found, hparams["pt_model"], hparams["normalize"], hparams["encoder_config"], str(tmp_path / "c")
        )


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


def test_settings_are_checked_up_front_in_one_line(synthetic_librispeech, tmp_path):
    """A string where a number is expected, a negative batch, unknown choices: one line naming each
    option and what it expects, before any work; the YAML's fp16 on a CPU is said, not silent."""
    common = [f"--data_folder={synthetic_librispeech}", "--pretrained_path=none", *TINY_MODEL, "--dnn_neurons=32"]
    proc = run(FINETUNE, "finetune/pom.yaml", [
        *common, f"--output_folder={tmp_path / 'a'}",
        "--max_batch_len=abc", "--batch_size=-2", "--best_metric=BLEU", "--test_decoding=viterbi",
    ], check=False)  # fmt: skip
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "Error: max_batch_len must be a positive number or null, got 'abc'; batch_size must be a positive integer, "
        "got -2; best_metric must be one of 'WER', 'CER', 'loss', got 'BLEU'; test_decoding must be one of 'beam', "
        "'greedy', got 'viterbi'"
    )
    assert not os.path.exists(tmp_path / "a" / "train.csv"), "the refusal should come before data preparation"
    if not torch.cuda.is_available():
        assert "Warning: precision fp16 (the YAML's) needs a GPU: training in fp32 on this CPU" in proc.stderr

    proc = run(
        FINETUNE, "finetune/pom.yaml", [*common, f"--output_folder={tmp_path / 'b'}", "--token_type=words"], check=False
    )
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert last.startswith("Error: ") and "token_type must be 'char', 'bpe' or 'unigram', got 'words'" in last


def test_check_hparams(synthetic_librispeech, tmp_path, capsys):
    """The recipe's one check: silent on the experiment files, one problem per wrong option."""
    sizes = ["--pretrained_path=none", *TINY_MODEL, "--dnn_neurons=32"]
    common = [f"--data_folder={synthetic_librispeech}", *sizes]
    hparams, problems = recipe_check(FINETUNE, "finetune/pom.yaml", [*common, "--precision=fp32"])
    assert problems == [] and "Warning:" not in capsys.readouterr().err
    _, problems = recipe_check(FINETUNE, "finetune/pom.yaml", [
        *sizes, f"--data_folder={tmp_path / 'nowhere'}", "--precision=fp32", "--lr=fast", "--global_batch_size=0",
        "--num_workers=-1", "--augment=maybe", "--sorting=shuffled",
    ])  # fmt: skip
    assert problems == [
        "lr must be a positive number, got 'fast'",
        "global_batch_size must be a positive integer or null, got 0",
        "num_workers must be an integer >= 0, got -1",
        "sorting must be one of 'ascending', 'descending', 'random', got 'shuffled'",
        "augment must be True or False, got 'maybe'",
        f"data_folder '{tmp_path / 'nowhere'}' does not exist: pass --data_folder=/path/to/LibriSpeech "
        "(the folder holding train-clean-100, dev-clean, ...)",
    ]
    if not torch.cuda.is_available():  # fp16: from the YAML, switched with a warning; on the command line, refused
        hparams, problems = recipe_check(FINETUNE, "finetune/pom.yaml", common)
        assert problems == [] and hparams["precision"] == "fp32"
        assert "Warning: precision fp16 (the YAML's) needs a GPU" in capsys.readouterr().err
        _, problems = recipe_check(FINETUNE, "finetune/pom.yaml", [*common, "--precision=fp16"])
        assert problems == ["--precision=fp16 needs a GPU (SpeechBrain has no fp16 on CPU): use fp32 or bf16"]
