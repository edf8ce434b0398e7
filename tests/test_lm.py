"""Word n-gram LM (pom.lm): Kneser-Ney estimates, a valid ARPA file that
SpeechBrain and KenLM read the same way, and LM decoding in the recipe."""

import gzip
import json
import math
import os
import shutil

import pytest
import torch
from finetune_helpers import FINETUNE, TINY_FINETUNE, TINY_MODEL, run, tiny_finetuned, tiny_pretrained
from speechbrain.decoders.ctc import CTCBeamSearcher
from speechbrain.lm.arpa import read_arpa
from speechbrain.lm.ngram import BackoffNgramLM

from pom.lm import EOS, UNK, build_lm, main, read_transcripts, train_kneser_ney, write_arpa
from pom.recipe.checks import check_lm_decoding
from pom.recipe.tokens import CTCTokens

SENTENCES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pom", "data", "sentences.txt.gz")


def real_sentences(n=300):
    with gzip.open(SENTENCES, "rt", encoding="utf-8") as f:
        lines = [line.strip().upper() for _, line in zip(range(n), f)]
    return [" ".join(w.strip('.,;:!?"()') for w in line.split()) for line in lines if line]


def arpa_of(sentences, order, path):
    with open(path, "w", encoding="utf-8") as f:
        write_arpa(train_kneser_ney(sentences, order=order), f)
    with open(path, encoding="utf-8") as f:
        return read_arpa(f)


def test_bigram_probability_by_hand(tmp_path):
    # Hand computation (see pom/lm.py): D2 = 8/(8+2*2), D1 = 4/(4+2*3), continuation
    # counts THE 1, CAT 2, SAT 2, </s> 2, DOG 1, A 1, RAN 1 (total 10), |V| = 8.
    _, probs, backoffs = arpa_of(["THE CAT SAT", "THE DOG SAT", "A CAT RAN"], 2, tmp_path / "lm.arpa")
    d1, d2 = 0.4, 8 / 12
    gamma1 = d1 * 7 / 10
    p_cat = (2 - d1) / 10 + gamma1 / 8
    assert 10 ** probs[1][()]["CAT"] == pytest.approx(p_cat, abs=1e-5)
    assert 10 ** probs[1][()][UNK] == pytest.approx(gamma1 / 8, abs=1e-5)
    gamma_the = d2 * 2 / 2
    assert 10 ** backoffs[1][("THE",)] == pytest.approx(gamma_the, abs=1e-5)
    assert 10 ** probs[2][("THE",)]["CAT"] == pytest.approx((1 - d2) / 2 + gamma_the * p_cat, abs=1e-5)


@pytest.mark.parametrize("order", [2, 3, 4])
def test_distributions_sum_to_one(tmp_path, order):
    sentences = real_sentences()
    _, probs, backoffs = arpa_of(sentences, order, tmp_path / "lm.arpa")
    lm = BackoffNgramLM(probs, backoffs)
    vocabulary = [w for w in probs[1][()] if w != "<s>"]
    assert EOS in vocabulary and UNK in vocabulary
    words = sentences[7].split()
    histories = [(), ("<s>",), ("<s>", words[0]), tuple(words[:3]), ("NOSUCHWORD", words[1]), ("THE",)]
    for history in histories:
        context = history[-(order - 1) :] if order > 1 else ()
        total = sum(10 ** lm.logprob(w, context=context) for w in vocabulary)
        assert total == pytest.approx(1.0, abs=2e-4), history


def test_arpa_is_prefix_and_suffix_closed(tmp_path):
    num, probs, _ = arpa_of(real_sentences(), 3, tmp_path / "lm.arpa")
    entries = {n: {ctx + (w,) for ctx, words in probs[n].items() for w in words} for n in probs}
    assert {n: len(e) for n, e in entries.items()} == num
    for n in (2, 3):
        for ngram in entries[n]:
            assert ngram[:-1] in entries[n - 1] and ngram[1:] in entries[n - 1], ngram


def test_kenlm_reads_the_same_probabilities(tmp_path):
    kenlm = pytest.importorskip("kenlm")
    sentences = real_sentences()
    path = str(tmp_path / "lm.arpa")
    _, probs, backoffs = arpa_of(sentences, 3, path)
    ours = BackoffNgramLM(probs, backoffs)
    model = kenlm.Model(path)
    for sentence in [sentences[3], sentences[50], "THE NOSUCHWORD IS HERE"]:
        words = ["<s>"] + [w if w in probs[1][()] else UNK for w in sentence.split()] + [EOS]
        expected = sum(ours.logprob(w, context=tuple(words[max(0, i - 2) : i])) for i, w in enumerate(words) if i > 0)
        assert model.score(sentence, bos=True, eos=True) == pytest.approx(expected, abs=1e-3)


def test_lm_corrects_a_misspelling_in_beam_search(tmp_path):
    pytest.importorskip("kenlm")
    pytest.importorskip("pygtrie")
    path = str(tmp_path / "lm.arpa")
    arpa_of(["THE CAT SAT ON THE MAT", "A CAT AND A DOG", "THE CAT IS HERE"] * 5, 3, path)
    vocab = CTCTokens.characters(str(tmp_path / "labels.txt")).vocab_list()
    # Frames spelling "THE KAT" (K slightly more likely than C), blanks between letters.
    frames = []
    for ch in "THE KAT":
        probs = torch.full((len(vocab),), 1e-4)
        if ch == "K":
            probs[vocab.index("K")], probs[vocab.index("C")] = 0.55, 0.45
        else:
            probs[vocab.index(ch)] = 1.0
        frames += [probs, torch.eye(len(vocab))[0] + 1e-4]
    log_probs = torch.stack(frames).div(torch.stack(frames).sum(-1, keepdim=True)).log().unsqueeze(0)
    lens = torch.ones(1)
    plain = CTCBeamSearcher(blank_index=0, vocab_list=vocab, space_token=" ", beam_size=10)
    assert plain(log_probs, lens)[0][0].text == "THE KAT"
    with_lm = CTCBeamSearcher(blank_index=0, vocab_list=vocab, space_token=" ", beam_size=10,
                              kenlm_model_path=path, alpha=0.5, beta=1.0)  # fmt: skip
    assert with_lm(log_probs, lens)[0][0].text == "THE CAT"


def test_build_lm_from_training_transcripts_only(synthetic_librispeech, tmp_path):
    out = str(tmp_path / "lm" / "3-gram.arpa")
    counts = build_lm(synthetic_librispeech, ["train-clean-100"], out, order=3)
    with open(out, encoding="utf-8") as f:
        num, probs, _ = read_arpa(f)
    assert num == counts and set(num) == {1, 2, 3}
    train_words = {w for s in read_transcripts(synthetic_librispeech, ["train-clean-100"]) for w in s.split()}
    assert set(probs[1][()]) == train_words | {"<s>", EOS, UNK}
    assert not os.path.exists(out + ".tmp")


def test_command_line_errors_name_the_folder(tmp_path, capsys):
    with pytest.raises(SystemExit, match=f"Error: {tmp_path}/nowhere/train-clean-100 does not exist"):
        main(["--data_folder", str(tmp_path / "nowhere"), "--out", str(tmp_path / "lm.arpa")])
    with pytest.raises(ValueError, match="order must be between 1 and 6"):
        train_kneser_ney(["A B"], order=9)


def test_recipe_checks_the_lm_before_training(synthetic_librispeech, tmp_path):
    assert "needs test_decoding: beam" in check_lm_decoding(__file__, "greedy")
    proc = run(FINETUNE, "finetune/pom.yaml", [
        f"--data_folder={synthetic_librispeech}", f"--output_folder={tmp_path / 'run'}", "--pretrained_path=none",
        f"--kenlm_model_path={tmp_path / 'missing.arpa'}", *TINY_MODEL, *TINY_FINETUNE,
    ], check=False)  # fmt: skip
    last = (proc.stdout + proc.stderr).strip().splitlines()[-1]
    assert proc.returncode != 0
    assert (
        last == f"Error: kenlm_model_path '{tmp_path / 'missing.arpa'}' does not exist "
        "(build one with: python -m pom.lm --help)"
    )
    assert not list(tmp_path.glob("run/save/CKPT+*"))


def test_recipe_adds_lm_results_to_a_finished_run(tmp_path_factory, synthetic_librispeech, tmp_path):
    pytest.importorskip("kenlm")
    pytest.importorskip("pygtrie")
    finished = tiny_finetuned(tmp_path_factory, synthetic_librispeech)
    folder = str(tmp_path / "run")
    shutil.copytree(finished, folder)
    lm = str(tmp_path / "lm.arpa")
    build_lm(synthetic_librispeech, ["train-clean-100", "train-clean-360", "train-other-500"], lm, order=3)
    run(FINETUNE, "finetune/pom.yaml", [
        f"--data_folder={synthetic_librispeech}", f"--output_folder={folder}",
        f"--pretrained_path={tiny_pretrained(tmp_path_factory, synthetic_librispeech)}",
        "--number_of_epochs=3", "--test_decoding=beam", "--beam_size=5", f"--kenlm_model_path={lm}",
        f"--results_file={folder}/results_lm.json", *TINY_MODEL, *TINY_FINETUNE,
    ])  # fmt: skip
    with open(os.path.join(folder, "results_lm.json"), encoding="utf-8") as f:
        results = json.load(f)
    assert results["lm"] == lm and results["decoding"] == "beam"
    assert set(results["splits"]) == {"dev-clean", "dev-other", "test-clean", "test-other"}
    for split, scores in results["splits"].items():
        assert os.path.exists(os.path.join(folder, f"wer_{split}_lm.txt"))
        assert math.isfinite(scores["WER"])
    # the run was complete: nothing was trained again
    with open(os.path.join(finished, "train_log.txt"), encoding="utf-8") as f:
        before = [line for line in f if line.startswith("epoch:")]
    with open(os.path.join(folder, "train_log.txt"), encoding="utf-8") as f:
        after = [line for line in f if line.startswith("epoch:")]
    assert after == before
