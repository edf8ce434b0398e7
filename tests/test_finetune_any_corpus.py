"""Fine-tuning on one's own CSVs (not LibriSpeech): --skip_prep=True with
train/valid/test CSV files of any names, transcripts with characters outside
LibriSpeech's (É everywhere, Ø only in one test set). The vocabulary comes from
the training transcripts and is saved with the run; unknown test characters
are counted and reported; the test uses the average of the last two
checkpoints; TensorBoard is written when available."""

import csv
import importlib.util
import json
import os

import pytest
import speechbrain as sb
import torch
import yaml
from finetune_helpers import FINETUNE, TINY_FINETUNE, TINY_MODEL, run, tiny_pretrained, train_log
from speechbrain.decoders.ctc import CTCBeamSearcher

from pom.data.librispeech import prepare_librispeech
from pom.recipe.checkpoints import final_checkpoint
from pom.recipe.hparams import load_run_hparams
from pom.recipe.tokens import CTCTokens, transcript_characters

HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


def rewrite(src, dst, table):
    """A CSV with the columns ID,duration,wav,wrd (no spk_id) and transcripts translated by ``table``."""
    with open(src, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    with open(dst, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["ID", "duration", "wav", "wrd"])
        for row in rows:
            writer.writerow([row["ID"], row["duration"], row["wav"], row["wrd"].translate(str.maketrans(table))])
    return dst


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, synthetic_librispeech):
    """My own CSVs (audio paths under $data_root, the synthetic corpus): train/valid with É for E,
    two test sets named read_speech and noisy, the second also with Ø for O (in no training transcript)."""
    folder = tmp_path_factory.mktemp("own_corpus")
    prep = str(folder / "prep")
    prepare_librispeech(
        synthetic_librispeech, prep, dev_splits=["dev-clean", "test-clean", "test-other"], merge_lst=["train-clean-100"]
    )
    accents = {"E": "É"}
    return {
        "data_folder": synthetic_librispeech,
        "train": rewrite(f"{prep}/train.csv", str(folder / "mine_train.csv"), accents),
        "valid": rewrite(f"{prep}/dev-clean.csv", str(folder / "mine_valid.csv"), accents),
        "tests": [
            rewrite(f"{prep}/test-clean.csv", str(folder / "read_speech.csv"), accents),
            rewrite(f"{prep}/test-other.csv", str(folder / "noisy.csv"), dict(accents, O="Ø")),
        ],
    }


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, synthetic_librispeech, corpus):
    pretrained = tiny_pretrained(tmp_path_factory, synthetic_librispeech)
    out = tmp_path_factory.mktemp("own_finetune") / "run"
    run(FINETUNE, "finetune/pom.yaml", [
        f"--data_folder={corpus['data_folder']}", f"--output_folder={out}", f"--pretrained_path={pretrained}",
        "--skip_prep=True", f"--train_csv={corpus['train']}", f"--valid_csv={corpus['valid']}",
        f"--test_csv=[{','.join(corpus['tests'])}]",
        "--number_of_epochs=3", "--test_decoding=beam", "--beam_size=4",
        "--avg_checkpoints=2", "--avg_checkpoints_select=last", f"--use_tensorboard={HAS_TENSORBOARD}",
        *TINY_MODEL, *TINY_FINETUNE,
    ])  # fmt: skip
    return str(out)


def results(folder):
    with open(os.path.join(folder, "results.json"), encoding="utf-8") as f:
        return json.load(f)


def test_own_csvs_fine_tune_with_their_vocabulary(finetuned, corpus):
    tokens = CTCTokens.load(os.path.join(finetuned, "save"), "char", None)
    labels = tokens.vocab_list()
    assert labels[0] == "<blank>" and labels[1:] == list(transcript_characters(corpus["train"]))
    assert "É" in labels and "E" not in labels and "Ø" not in labels
    log = train_log(finetuned)
    assert [row[0] for row in log] == [1, 2, 3] and log[-1][1] < log[0][1], log  # training loss falls
    # the head has one output per label, in the run's hyperparams.yaml too (load_run_hparams rebuilds it)
    hparams = load_run_hparams(finetuned)
    assert hparams["output_neurons"] == len(tokens) == hparams["ctc_lin"].w.out_features
    found = results(finetuned)
    assert found["vocabulary_size"] == len(tokens) and found["train_splits"] is None
    assert set(found["splits"]) == {"read_speech", "noisy"}  # named after the files
    for name in ("read_speech", "noisy"):
        with open(os.path.join(finetuned, f"wer_{name}.txt"), encoding="utf-8") as f:
            assert "É" in f.read()  # the references keep their characters
    assert not os.path.exists(os.path.join(finetuned, "train.csv"))  # skip_prep: nothing prepared


def test_unknown_test_characters_are_counted_and_reported(finetuned, corpus):
    with open(corpus["tests"][1], newline="", encoding="utf-8") as f:
        expected = sum(row["wrd"].count("Ø") for row in csv.DictReader(f))
    splits = results(finetuned)["splits"]
    assert expected > 0 and splits["noisy"]["unknown_characters"] == {"Ø": expected}
    assert splits["read_speech"]["unknown_characters"] == {}
    with open(os.path.join(finetuned, "log.txt"), encoding="utf-8") as f:
        log = f.read()
    assert f"test set noisy: {expected} character(s) of the transcripts are not in the vocabulary" in log
    assert f"'Ø' x{expected}" in log


def test_the_new_characters_are_decoded(finetuned, corpus):
    """The run's labels and SpeechBrain's decoders (greedy and the recipe's beam search) give back
    É; the run's own model, rebuilt from hyperparams.yaml and its tested checkpoint, scores those labels."""
    tokens = CTCTokens.load(os.path.join(finetuned, "save"), "char", None)
    text = "CAFÉ AU LAIT"
    ids = tokens.encode(text)
    frames = []
    for i in ids:  # each label for two frames, then a blank
        frames += [i, i, tokens.blank_index]
    log_probs = torch.full((1, len(frames), len(tokens)), -20.0)
    log_probs[0, torch.arange(len(frames)), torch.tensor(frames)] = 0.0
    greedy = sb.decoders.ctc_greedy_decode(log_probs, torch.ones(1), blank_id=tokens.blank_index)
    assert tokens.decode(greedy[0]) == text
    searcher = CTCBeamSearcher(blank_index=0, vocab_list=tokens.vocab_list(), space_token=" ", beam_size=4)
    assert searcher(log_probs, torch.ones(1))[0][0].text == text

    hparams = load_run_hparams(finetuned)
    checkpoint = final_checkpoint(hparams["save_folder"], hparams["best_metric"])
    sb.utils.checkpoints.Checkpointer(
        hparams["save_folder"], {k: hparams[k] for k in ("pt_model", "model", "normalize")}
    ).load_checkpoint(checkpoint)
    with open(corpus["tests"][0], newline="", encoding="utf-8") as f:
        first = next(csv.DictReader(f))
    wav = sb.dataio.dataio.read_audio(first["wav"].replace("$data_root", corpus["data_folder"]))
    for module in ("pt_model", "model", "normalize"):
        hparams[module].eval()
    with torch.no_grad():
        feats = hparams["normalize"](hparams["compute_features"](wav[None]), torch.ones(1))
        encoded = hparams["encoder"](hparams["CNN"](feats), torch.ones(1))
        out = hparams["log_softmax"](hparams["ctc_lin"](hparams["back_end_ffn"](encoded)))
    assert out.shape[-1] == len(tokens) and torch.isfinite(out).all()


def test_the_test_uses_the_average_of_the_last_checkpoints(finetuned):
    found = results(finetuned)
    save = os.path.join(finetuned, "save")
    validated = []
    for name in os.listdir(save):
        meta_file = os.path.join(save, name, "CKPT.yaml")
        if name.startswith("CKPT+") and os.path.isfile(meta_file):
            with open(meta_file, encoding="utf-8") as f:
                meta = yaml.safe_load(f)
            if "WER" in meta:
                validated.append((meta["unixtime"], name))
    last_two = [name for _, name in sorted(validated, reverse=True)[:2]]
    assert found["averaged_checkpoints"] == last_two and found["avg_checkpoints_select"] == "last"
    assert found["checkpoint"].startswith("averaged/CKPT+")
    tested = final_checkpoint(save, "WER")
    assert os.path.relpath(str(tested.path), save) == found["checkpoint"]
    averaged = torch.load(tested.paramfiles["model"], map_location="cpu")
    for key, value in averaged.items():
        parts = [torch.load(os.path.join(save, name, "model.ckpt"), map_location="cpu")[key] for name in last_two]
        torch.testing.assert_close(value, (parts[0] + parts[1]) / 2)


@pytest.mark.skipif(not HAS_TENSORBOARD, reason="tensorboard is not installed")
def test_tensorboard_events_of_the_fine_tuning(finetuned):
    from test_tracking import scalars

    found = scalars(os.path.join(finetuned, "tensorboard"))
    log = train_log(finetuned)
    assert found["loss/train"] == pytest.approx([row[1] for row in log], rel=0.01)
    assert found["epoch"] == [1.0, 2.0, 3.0] and len(found["WER/valid"]) == 3
    splits = results(finetuned)["splits"]
    for name in ("read_speech", "noisy"):
        assert found[f"WER_{name}/test"] == pytest.approx([splits[name]["WER"]], abs=0.01)
