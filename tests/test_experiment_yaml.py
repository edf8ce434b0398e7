"""``python -m pom.recipe.hparams FILE``: every experiment printed as one YAML file that plain
hyperpyyaml loads into the same settings as our loader, each change's source in a comment, bad
files and overrides refused in one line."""

import functools
import os
import pathlib
import subprocess
import sys

import pytest
import torch
from hyperpyyaml import load_hyperpyyaml

from pom.recipe.experiment_yaml import experiment_yaml, main, overrides_from_args
from pom.recipe.hparams import load_hparams

ROOT = pathlib.Path(__file__).resolve().parents[1]
FILES = [
    f"hparams/{stage}/{p.name}"
    for stage in ("pretrain", "finetune")
    for p in sorted((ROOT / "hparams" / stage).glob("*.yaml"))
    if p.name != "base.yaml"
]


def settings(value, depth=0):
    """What a loaded hyperparameter is, comparably: plain values as they are, modules as their
    class and tensors (shape, dtype and, off the meta device, the values' sum), other objects as
    their class and attributes."""
    if depth > 6:
        return type(value).__name__
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return type(value)(settings(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return {k: settings(v, depth + 1) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        return (tuple(value.shape), str(value.dtype), None if value.is_meta else float(value.double().sum()))
    if isinstance(value, torch.nn.Module):
        return (type(value).__name__, {k: settings(v, depth + 1) for k, v in value.state_dict().items()})
    if isinstance(value, functools.partial):
        return ("partial", value.func, settings(value.args, depth + 1), settings(value.keywords, depth + 1))
    if isinstance(value, type) or callable(value) and not hasattr(value, "__dict__"):
        return value
    return (type(value).__name__, settings(getattr(value, "__dict__", {}), depth + 1))


def load_both(path, overrides):
    """(our loader's hparams, hyperpyyaml's on the printed file); pre-training on the meta device."""
    device = torch.device("meta") if "/pretrain/" in path else torch.device("cpu")
    with device:
        ours = load_hparams(path, overrides)
        printed = load_hyperpyyaml(experiment_yaml(path, overrides))
    return ours, printed


@pytest.mark.parametrize("path", FILES)
def test_the_printed_experiment_loads_into_the_same_settings(path, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    overrides = f"data_folder: {tmp_path}\noutput_folder: {tmp_path}/out\nlr: 0.25\n"
    if "/finetune/" in path:
        overrides += "pretrained_path: none\nnum_layers: 1\n"
    ours, printed = load_both(path, overrides)
    assert list(printed) == list(ours)
    assert settings(printed) == settings(ours)
    assert printed["lr"] == 0.25 and printed["output_folder"] == f"{tmp_path}/out"
    assert printed["experiment_name"] == pathlib.Path(path).stem  # named after the file, as the recipes do


def test_each_change_names_its_source(monkeypatch):
    monkeypatch.chdir(ROOT)
    text = experiment_yaml("hparams/pretrain/mamba.yaml", overrides_from_args(["--mixer_options={d_state: 8}"]))
    lines = text.splitlines()
    setup, encoder = "hparams/pretrain/setups/whetten2024.yaml", "hparams/encoders/mamba.yaml"
    assert "precision: bf16 # from " + setup in lines
    assert "d_model: 474 # from " + encoder in lines
    assert "experiment_name: mamba # from the name of hparams/pretrain/mamba.yaml" in lines
    assert any(line.startswith("global_batch_seconds: 6400 # from " + setup + ": 400 s per GPU") for line in lines)
    # a mapping changed by two layers: each key says where it comes from
    assert any(line.strip().startswith("d_state: 8") and line.endswith("# from the command line") for line in lines)
    assert "    d_conv: 4 # from " + encoder in lines
    assert "adam_betas: (0.9, 0.98) # [SB]" in lines  # the base file's own lines are kept as they are
    assert (
        "every other one is from hparams/pretrain/base.yaml" in text
        and "Still to give (!PLACEHOLDER): data_folder" in text
    )
    pom = experiment_yaml("hparams/pretrain/pom.yaml").splitlines()
    assert "lr: 0.001 # from hparams/pretrain/pom.yaml: [PoM] (SpeechBrain: 8e-4)" in pom


def test_the_command_prints_and_refuses_bad_input_in_one_line(tmp_path):
    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "pom.recipe.hparams", *args], cwd=ROOT, capture_output=True, text=True
        )

    ok = run("hparams/finetune/pom.yaml", f"--data_folder={tmp_path}", "--pretrained_path", "none")
    assert ok.returncode == 0, ok.stderr
    assert f"data_folder: {tmp_path} # from the command line" in ok.stdout.splitlines()
    for args, message in [
        (["hparams/pretrain/nothing.yaml"], "hparams/pretrain/nothing.yaml is not a file"),
        (["hparams/pretrain/pom.yaml", "--dmodel=3"], "the command line sets 'dmodel', which is not a setting of"),
        (["hparams/pretrain/pom.yaml", "--d_model"], "--d_model has no value"),
        (["hparams/pretrain/pom.yaml", "d_model=3"], "expected --key=value"),
        (["hparams/pretrain/pom.yaml", "--d_model=3", "--d_model=4"], "give each --option once"),
    ]:
        bad = run(*args)
        assert bad.returncode == 2 and bad.stdout == ""
        assert bad.stderr.startswith("error: ") and message in bad.stderr and bad.stderr.count("\n") == 1, bad.stderr


def test_an_overlay_setting_that_the_base_lacks_is_named(tmp_path, capsys):
    (tmp_path / "base.yaml").write_text("a: 1\n")
    (tmp_path / "enc.yaml").write_text("b: 2\n")
    (tmp_path / "exp.yaml").write_text("base: [base.yaml, enc.yaml]\n")
    assert main([str(tmp_path / "exp.yaml")]) == 2
    assert f"{tmp_path / 'enc.yaml'} sets 'b', which is not a setting of" in capsys.readouterr().err
    with pytest.raises(KeyError, match="sets 'b'"):
        load_hparams(tmp_path / "exp.yaml")
