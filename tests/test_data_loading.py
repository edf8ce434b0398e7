"""The recipes' DataLoader options (CPU): the YAML's GPU-sized values, and
command-line overrides, reach the DataLoader that SpeechBrain builds; on a CPU
(or without workers) what cannot apply is dropped."""

import os

import pytest
import speechbrain as sb
from finetune_helpers import load_recipe, recipe_check

from pom.recipe.loading import loader_options, run_device

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = {
    "pretrain": os.path.join(ROOT, "recipes", "LibriSpeech", "pretrain", "train.py"),
    "finetune": os.path.join(ROOT, "recipes", "LibriSpeech", "finetune", "train.py"),
}
#: what each stage needs on any command line here (fine-tuning: no pre-trained model is read)
REQUIRED = {"pretrain": ["--precision=fp32"], "finetune": ["--precision=fp32", "--pretrained_path=none"]}


def test_options_that_cannot_apply_are_dropped():
    gpu = {"num_workers": 8, "pin_memory": True, "persistent_workers": True, "prefetch_factor": 2}
    assert loader_options(gpu, "cuda:1") == gpu
    assert loader_options(gpu, "cpu") == {"num_workers": 8, "persistent_workers": True, "prefetch_factor": 2}
    assert loader_options(dict(gpu, num_workers=0), "cuda:0") == {"num_workers": 0, "pin_memory": True}
    assert loader_options({"batch_size": 6}, "cpu") == {"batch_size": 6}


def test_run_device_is_the_brains():
    """--device first, then the YAML's device, then SpeechBrain's guess (a CPU here)."""
    _, run_opts, _ = sb.parse_arguments(["x.yaml", "--device=cuda:1"])
    assert run_device({"device": "cpu"}, run_opts) == "cuda:1"
    _, run_opts, _ = sb.parse_arguments(["x.yaml"])
    assert run_device({"device": "cuda:0"}, run_opts) == "cuda:0"
    assert run_device({}, run_opts) == sb.utils.distributed.infer_device()


def write_csvs(folder, names):
    """Two-line CSVs (never read beyond the header and rows: no DataLoader is iterated)."""
    os.makedirs(folder, exist_ok=True)
    for name in names:
        with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
            f.write("ID,duration,wav,spk_id,wrd\n")
            f.write("a,3.0,$data_root/a.flac,1,HELLO WORLD\nb,4.0,$data_root/b.flac,1,GOOD MORNING\n")


def loaders(stage, tmp_path, device, *args):
    """SpeechBrain's DataLoaders (as Brain.fit builds them) from the recipe's loader options
    for ``device``, with the experiment file and the command line ``args``."""
    out = str(tmp_path / stage)
    common = [*REQUIRED[stage], f"--output_folder={out}", f"--data_folder={tmp_path}", "--skip_prep=True"]
    write_csvs(out, ["train.csv", "dev-clean.csv", "dev-other.csv", "test-clean.csv", "test-other.csv"])
    hparams, problems = recipe_check(RECIPES[stage], f"{stage}/pom.yaml", [*common, *args])
    assert problems == []
    recipe = load_recipe(RECIPES[stage])
    if stage == "pretrain":
        train_data, valid_data, _, train_kwargs, valid_kwargs = recipe.dataio_prepare(hparams, device)
    else:
        os.makedirs(hparams["save_folder"], exist_ok=True)
        prepared = recipe.dataio_prepare(hparams, recipe.build_tokens(hparams), device)
        train_data, valid_data, _, train_kwargs, valid_kwargs, _ = prepared
    make = sb.dataio.dataloader.make_dataloader
    return hparams, make(train_data, **train_kwargs), make(valid_data, **valid_kwargs)


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_gpu_sized_defaults_reach_the_dataloader(stage, tmp_path):
    hparams, train, valid = loaders(stage, tmp_path, "cuda:0")
    expected = 8 if stage == "pretrain" else 4  # decoding 1400 s batches vs 6-utterance batches
    assert hparams["num_workers"] == expected
    assert (train.num_workers, train.pin_memory, train.persistent_workers, train.prefetch_factor) == (
        expected, True, True, 2
    )  # fmt: skip
    assert (valid.num_workers, valid.pin_memory, valid.persistent_workers) == (expected, True, False)


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_on_cpu_without_workers_nothing_gpu_only_is_passed(stage, tmp_path):
    _, train, valid = loaders(stage, tmp_path, "cpu", "--num_workers=0")
    for loader in (train, valid):
        assert (loader.num_workers, loader.pin_memory, loader.persistent_workers) == (0, False, False)
        assert loader.prefetch_factor is None


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_command_line_overrides_reach_the_dataloader(stage, tmp_path):
    args = ["--num_workers=3", "--pin_memory=False", "--persistent_workers=False", "--prefetch_factor=4"]
    _, train, _ = loaders(stage, tmp_path, "cuda:0", *args)
    options = (train.num_workers, train.pin_memory, train.persistent_workers, train.prefetch_factor)
    assert options == (3, False, False, 4)


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_bad_loader_options_are_refused_in_one_line(stage, tmp_path):
    args = [*REQUIRED[stage], f"--output_folder={tmp_path}", f"--data_folder={tmp_path}", "--pin_memory=maybe"]
    args.append("--prefetch_factor=0")
    _, problems = recipe_check(RECIPES[stage], f"{stage}/pom.yaml", args)
    assert "pin_memory must be True or False, got 'maybe'" in problems
    assert "prefetch_factor must be a positive integer or null, got 0" in problems
