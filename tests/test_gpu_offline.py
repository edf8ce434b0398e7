"""Tests of make gpu-check's offline path without a GPU and without network:
the import list of the check's code path and who provides each import (the
image or the bundle), the bundle's building and reading, its installation
(pip --no-index --target, and by unpacking), the preflight's lines up to the
check, the Makefile's choice between the offline path and make install, and the
rehearsal's image venv and verdict. Wheels are made here by the tests (nothing
is downloaded); ``make gpu-rehearsal`` (which downloads the real bundle) is the
end-to-end run.
"""

import base64
import doctest
import hashlib
import json
import os
import subprocess
import sys
import zipfile

import pytest

from benchmarks import gpu_bundle, gpu_imports, gpu_preflight, gpu_rehearsal, gpu_stages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = f"{sys.version_info.major}.{sys.version_info.minor}"


@pytest.mark.parametrize("module", [gpu_imports, gpu_stages])
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


# --------------------------------------------------------------------------- the import list
def test_the_check_imports_only_what_the_image_or_the_bundle_provides():
    """The bundle list derived from the code equals gpu_imports.BUNDLE, and every
    import of the path belongs to a distribution of the image or of the bundle."""
    path = gpu_imports.code_path()
    requirements, unprovided = gpu_imports.bundle_requirements(path)
    assert unprovided == {}, f"imports of the check's code path that nothing provides: {unprovided}"
    assert sorted(requirements) == sorted(gpu_imports.BUNDLE), "update gpu_imports.BUNDLE (and rebuild the bundle)"
    image = gpu_imports.requirement_closure(gpu_imports.IMAGE)
    owners = gpu_imports.providers()
    for module in path.required_third_party():
        dists = owners[module.split(".")[0]]
        assert any(d in image or d in requirements for d in dists), module
    # what the review of the image found missing is in the bundle; nothing of the image is
    assert {"speechbrain", "hyperpyyaml", "ruamel-yaml", "soundfile", "pyyaml", "torchaudio"} <= set(requirements)
    assert not {"torch", "triton", "numpy", "scipy", "matplotlib", "sentencepiece", "tqdm"} & set(requirements)
    assert requirements["torchaudio"] == gpu_imports.IMAGE_TORCH  # the wheel built against the image's torch
    assert {"jiwer", "kenlm"}.isdisjoint(requirements)  # not on the check's path (greedy decoding)


def test_the_code_path_follows_every_way_in():
    path = gpu_imports.code_path()
    first = set(path.first_party)
    assert {"script:recipes/LibriSpeech/pretrain/train.py", "script:recipes/LibriSpeech/finetune/train.py"} <= first
    # importlib.import_module(f"pom.ops.polynomial.{...}"): the whole package
    assert {"pom.ops.polynomial.fused", "pom.ops.polynomial.chunked", "pom.ops.polynomial.reference"} <= first
    assert {"pom.encoder", "pom.bestrq", "pom.recipe.checkpoints", "pom.recipe.tokens"} <= first  # named in YAML
    third = set(path.required_third_party())
    assert {"speechbrain.lobes.features", "speechbrain.nnet.schedulers", "torch.optim"} <= third  # YAML tags
    assert {"torchaudio.functional", "yaml", "matplotlib.pyplot", "soundfile"} <= third  # inside functions
    assert "triton" not in third and "mamba_ssm.ops.selective_scan_interface" not in third  # behind try
    assert "wandb" not in third and "wandb" in gpu_imports.SWITCHED_OFF


def write_module(root, name, text):
    path = root / (name.replace(".", "/") + ".py")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_new_import_that_nothing_provides_is_caught(tmp_path):
    write_module(tmp_path, "pom.__init__", "")
    write_module(tmp_path, "pom.ops.__init__", "")
    write_module(tmp_path, "pom.ops.a", "import json\n")
    write_module(tmp_path, "pom.ops.b", "def f():\n    import yaml\n")
    write_module(tmp_path, "pom.thing", "from .ops import a\nclass Cls:\n    pass\n")
    write_module(
        tmp_path,
        "pom.new",
        "import importlib\nimport not_a_real_package_xyz\ntry:\n    import another_missing_pkg\n"
        "except ImportError:\n    another_missing_pkg = None\n"
        "def load(name):\n    return importlib.import_module(f'pom.ops.{name}')\n",
    )
    (tmp_path / "hparams").mkdir()
    (tmp_path / "hparams" / "x.yaml").write_text(
        "model: !new:pom.thing.Cls\nlinear: !name:speechbrain.nnet.linear.Linear\n"
    )
    path = gpu_imports.code_path(modules=("pom.new",), scripts=(), yaml_folders=("hparams",), repo=str(tmp_path))
    assert sorted(path.first_party) == ["pom", "pom.new", "pom.ops", "pom.ops.a", "pom.ops.b", "pom.thing"]
    assert path.required_third_party() == ["not_a_real_package_xyz", "speechbrain.nnet.linear", "yaml"]
    assert path.third_party["another_missing_pkg"] == [("pom/new.py", True)]
    requirements, unprovided = gpu_imports.bundle_requirements(path)
    assert unprovided == {"not_a_real_package_xyz": ["pom/new.py"]}
    assert {"speechbrain", "pyyaml"} <= set(requirements) and "torch" not in requirements
    with pytest.raises(FileNotFoundError, match="pom.gone"):
        gpu_imports.code_path(modules=("pom.gone",), scripts=(), yaml_folders=(), repo=str(tmp_path))


def test_the_import_check_reports_each_failure(tmp_path):
    (tmp_path / "ok.py").write_text("import os\nif __name__ == '__main__':\n    raise SystemExit('main ran')\n")
    (tmp_path / "bad.py").write_text("import not_a_real_package_xyz\n")
    path = gpu_imports.CodePath()
    path.first_party = {"script:ok.py": str(tmp_path / "ok.py"), "script:bad.py": str(tmp_path / "bad.py")}
    for module in ("yaml", "speechbrain.utils.distributed.if_main_process", "not_a_real_package_xyz"):
        path.third_party[module] = [("x.py", False)]  # an attribute imported with `from ... import`: its module
    failures, count = gpu_imports.import_all(path)
    assert count == 5
    assert failures == [
        ("script:bad.py", "ModuleNotFoundError: No module named 'not_a_real_package_xyz'"),
        ("not_a_real_package_xyz", "ModuleNotFoundError: No module named 'not_a_real_package_xyz'"),
    ]


def test_every_stage_command_is_on_the_import_path(tmp_path):
    for quick in (False, True):
        for stage, commands in gpu_stages.stage_commands(str(tmp_path), quick=quick).items():
            for name, argv in commands:
                if argv[1] == "-m":
                    assert argv[2] in gpu_imports.ENTRY_MODULES, (stage, name)
                else:
                    assert os.path.relpath(argv[1], ROOT) in gpu_imports.ENTRY_SCRIPTS, (stage, name)


# --------------------------------------------------------------------------- wheels and bundles
def make_wheel(folder, name="pomtestpkg", version="1.0", value=42):
    """A small pure-Python wheel: a package, a module under .data/purelib, metadata."""
    file = os.path.join(folder, f"{name}-{version}-py3-none-any.whl")
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VALUE = {value}\n",
        f"{name}-{version}.data/purelib/{name}_extra.py": "EXTRA = True\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join(record + [f"{info}/RECORD,,"]) + "\n"
    with zipfile.ZipFile(file, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return file


def fake_fetch(requirements, dest, python_version):
    for name, version in requirements.items():
        make_wheel(dest, name, version)


def test_pip_download_command():
    argv = gpu_bundle.pip_download_command({"speechbrain": "1.1.2", "pyyaml": "6.0.4"}, "/d", "3.12", python="py")
    assert argv[:4] == ["py", "-m", "pip", "download"]
    assert {"--no-deps", "--only-binary=:all:"} <= set(argv)
    pairs = {(a, b) for a, b in zip(argv, argv[1:])}
    assert {("--python-version", "3.12"), ("--abi", "cp312"), ("--implementation", "cp"), ("--dest", "/d")} <= pairs
    assert ("--platform", "manylinux2014_x86_64") in pairs and ("--platform", "manylinux_2_28_x86_64") in pairs
    assert argv[-2:] == ["pyyaml==6.0.4", "speechbrain==1.1.2"]


def test_bundle_build_and_read(tmp_path, monkeypatch):
    out = str(tmp_path / "bundle")
    manifest = gpu_bundle.build(out, HERE, corpus=False, fetch=fake_fetch, requirements={"pomtestpkg": "1.0"})
    assert [w["file"] for w in manifest["wheels"]] == ["pomtestpkg-1.0-py3-none-any.whl"]
    assert manifest["python"] == HERE and manifest["corpus"] is None and 0 < manifest["size_bytes"] < 2**20
    assert json.loads((tmp_path / "bundle" / "manifest.json").read_text()) == manifest
    read, problem = gpu_preflight.read_bundle(out)
    assert problem is None and read == manifest
    assert gpu_preflight.describe_bundle("b", read).startswith(f"b: 1 wheels for CPython {HERE}, no corpus, ")

    # too big: refused, and no manifest left (the preflight would refuse the folder)
    with pytest.raises(RuntimeError, match="more than the 1e-06 MiB allowed"):
        gpu_bundle.build(out, HERE, corpus=False, fetch=fake_fetch, requirements={"pomtestpkg": "1.0"}, limit_mib=1e-6)
    assert gpu_preflight.read_bundle(out)[1].startswith("no manifest.json in")
    # a wheel that is missing or not asked for
    with pytest.raises(RuntimeError, match="no wheel for other"):
        two = {"pomtestpkg": "1", "other": "2"}
        gpu_bundle.build(out, HERE, corpus=False, fetch=lambda r, d, v: make_wheel(d), requirements=two)
    with pytest.raises(RuntimeError, match="is not one of the bundle's distributions"):
        gpu_bundle.build(out, HERE, corpus=False, fetch=lambda r, d, v: make_wheel(d, "stray"), requirements={})

    # for another Python, damaged, corpus gone
    gpu_bundle.build(out, "3.99", corpus=False, fetch=fake_fetch, requirements={"pomtestpkg": "1.0"})
    assert gpu_preflight.read_bundle(out)[1] == (
        f"built for Python 3.99, this is {HERE}: make gpu-bundle GPU_BUNDLE_PYTHON={HERE} on a machine with network"
    )
    manifest = gpu_bundle.build(out, HERE, corpus=False, fetch=fake_fetch, requirements={"pomtestpkg": "1.0"})
    with open(os.path.join(out, "wheels", manifest["wheels"][0]["file"]), "ab") as f:
        f.write(b"x")
    assert "does not match its sha256" in gpu_preflight.read_bundle(out)[1]
    manifest["corpus"] = {"folder": "corpus", "audio_hours": 0.3}
    gpu_bundle.build(out, HERE, corpus=False, fetch=fake_fetch, requirements={"pomtestpkg": "1.0"})
    data = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    (tmp_path / "bundle" / "manifest.json").write_text(json.dumps(dict(data, corpus=manifest["corpus"])))
    assert gpu_preflight.read_bundle(out)[1].endswith("corpus is missing")


@pytest.mark.parametrize("with_pip", [True, False])
def test_bundle_install_then_import(tmp_path, monkeypatch, with_pip):
    """pip install --no-index --no-deps --target, or unpacked where Python has no pip: the same import."""
    out = str(tmp_path / "bundle")
    manifest = gpu_bundle.build(out, HERE, corpus=False, fetch=fake_fetch, requirements={"pomtestpkg": "1.0"})
    monkeypatch.setattr(gpu_preflight, "has_pip", lambda python=None: with_pip)
    target = tmp_path / "target"
    target.mkdir()
    how = gpu_preflight.install_bundle(out, manifest, str(target))
    assert how == ("pip --no-index --no-deps --target" if with_pip else "unpacked: this Python has no pip")
    env = gpu_preflight.check_env(str(target))
    assert env["PYTHONPATH"].split(os.pathsep)[:2] == [str(target), gpu_preflight.REPO]
    probe = "import pomtestpkg, pomtestpkg_extra; print(pomtestpkg.VALUE, pomtestpkg_extra.EXTRA)"
    proc = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, cwd=str(tmp_path))
    assert proc.stdout.split() == ["42", "True"], proc.stderr
    with open(os.path.join(out, "wheels", manifest["wheels"][0]["file"]), "wb") as f:
        f.write(b"not a zip")
    with pytest.raises(RuntimeError, match="unpacking failed too: File is not a zip file"):
        gpu_preflight.install_bundle(out, manifest, str(target))


def test_bundle_install_unpacks_where_pip_fails(tmp_path, monkeypatch):
    out = str(tmp_path / "bundle")
    manifest = gpu_bundle.build(out, HERE, corpus=False, fetch=fake_fetch, requirements={"pomtestpkg": "1.0"})
    failing = tmp_path / "python"  # a Python whose pip exits 1 with a message
    failing.write_text('#!/bin/sh\necho "ERROR: this pip cannot" >&2\nexit 1\n')
    failing.chmod(0o755)
    monkeypatch.setattr(gpu_preflight, "has_pip", lambda python=None: True)
    target = tmp_path / "target"
    target.mkdir()
    how = gpu_preflight.install_bundle(out, manifest, str(target), python=str(failing))
    assert how == "unpacked: pip failed (ERROR: this pip cannot)"
    assert (target / "pomtestpkg" / "__init__.py").read_text() == "VALUE = 42\n"
    assert (target / "pomtestpkg_extra.py").exists() and (target / "pomtestpkg-1.0.dist-info" / "METADATA").exists()


# --------------------------------------------------------------------------- preflight
def test_preflight_lines_up_to_the_check(tmp_path, capsys):
    """This GPU-less machine, a bundle of one wheel: every line, the install, the
    imports of the whole code path, then the check's command line with the time left."""
    out = str(tmp_path / "bundle")
    gpu_bundle.build(out, HERE, corpus=False, fetch=fake_fetch, requirements={"pomtestpkg": "1.0"})
    status = gpu_preflight.preflight(out, ["--quick", "--out", str(tmp_path / "o")], run_check=False)
    text = capsys.readouterr().out
    assert status == 0, text
    lines = {line.split(":", 1)[0].removeprefix("[preflight] "): line for line in text.splitlines()}
    assert list(lines) == list(gpu_rehearsal.PREFLIGHT_ITEMS), text
    assert lines["cuda device"].endswith("MISSING")  # no GPU here
    date = json.loads(open(os.path.join(out, "manifest.json")).read())["date"]
    assert "CUDA" in lines["torch"] and lines["bundle"].endswith(
        f"1 wheels for CPython {HERE}, no corpus, 0.0 MiB, built {date}"
    )
    assert "1 wheels into" in lines["installed"] and ", ok (" in lines["imports"]
    running = lines["running"].split()
    assert running[2:9] == [
        "python",
        "-m",
        "benchmarks.gpu_check",
        "--quick",
        "--out",
        str(tmp_path / "o"),
        "--budget-s",
    ]
    assert 150 <= int(running[9]) <= 240 - gpu_preflight.MARGIN_S


def test_preflight_stops_before_installing_a_bundle_for_another_python(tmp_path, capsys):
    out = str(tmp_path / "bundle")
    gpu_bundle.build(out, "3.99", corpus=False, fetch=fake_fetch, requirements={"pomtestpkg": "1.0"})
    assert gpu_preflight.preflight(out, [], run_check=False) == gpu_preflight.EXIT_STOPPED
    captured = capsys.readouterr()
    assert "[preflight] bundle: built for Python 3.99" in captured.out and "installed" not in captured.out
    assert "[preflight] stopped: the bundle cannot be used here" in captured.err


def test_decide(tmp_path, monkeypatch):
    import torch

    bundle = str(tmp_path / "bundle")
    gpu_bundle.build(bundle, HERE, corpus=False, fetch=fake_fetch, requirements={"pomtestpkg": "1.0"})
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    base = f"{sys.executable} has torch {torch.__version__} (CUDA 13.0)"
    assert gpu_preflight.decide(bundle) == (True, f"{base} and the bundle {bundle}: offline preflight")
    offline, why = gpu_preflight.decide(str(tmp_path / "none"))  # no bundle, but this environment has everything
    assert offline and why.endswith("every package of the check: preflight without a bundle")
    monkeypatch.setattr(gpu_preflight, "missing_packages", lambda: ["hyperpyyaml", "speechbrain"])
    none = str(tmp_path / "none")
    assert gpu_preflight.decide(none)[1] == f"{base} but neither the bundle {none} nor hyperpyyaml, speechbrain"
    assert not gpu_preflight.decide(str(tmp_path / "none"))[0]
    monkeypatch.setattr(torch.version, "cuda", None)
    assert gpu_preflight.decide(bundle) == (False, f"{sys.executable} has torch {torch.__version__} without CUDA")


def make_fake_python(folder, decide_status):
    """A stand-in for GPU_PYTHON that logs its arguments; --decide exits with ``decide_status``."""
    script = folder / "fakepython"
    log = folder / "log"
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\ncase "$*" in *--decide*) exit {decide_status};; esac\nexit 0\n')
    script.chmod(0o755)
    return str(script), log


def test_makefile_takes_the_offline_path_without_install(tmp_path):
    python, log = make_fake_python(tmp_path, 0)
    variables = [f"GPU_PYTHON={python}", "GPU_BUNDLE=b", "GPU_CHECK_ARGS=--quick", "VENV=/nonexistent"]
    proc = subprocess.run(["make", "-s", "-C", ROOT, "gpu-check", *variables], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert log.read_text().splitlines() == [
        "-m benchmarks.gpu_preflight --decide --bundle b",
        "-m benchmarks.gpu_preflight --bundle b --quick",
    ]
    # not offline, and GPU_OFFLINE set: an error, never make install
    python, log = make_fake_python(tmp_path, 1)
    proc = subprocess.run(
        ["make", "-s", "-C", ROOT, "gpu-check", *variables[:-1], "GPU_OFFLINE=1", "VENV=/nonexistent"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "GPU_OFFLINE is set: no make install" in proc.stderr
    assert log.read_text().splitlines()[-1] == "-m benchmarks.gpu_preflight --decide --bundle b"


# --------------------------------------------------------------------------- rehearsal
def test_the_image_venv_holds_the_image_and_nothing_else(tmp_path):
    python = gpu_rehearsal.make_image_venv(str(tmp_path / "venv"))
    probe = (
        "import importlib.util as u, torch, triton, numpy, matplotlib, tqdm, sentencepiece\n"
        "print(torch.__version__, [m for m in ('speechbrain', 'hyperpyyaml', 'ruamel', 'yaml', 'soundfile',"
        " 'torchaudio', 'jiwer', 'pom') if u.find_spec(m)])"
    )
    proc = subprocess.run(
        [python, "-c", probe], capture_output=True, text=True, env=gpu_rehearsal.clean_env(), cwd=str(tmp_path)
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-1] == "[]" and proc.stdout.startswith("2.")


def test_rehearsal_smoke_commands(tmp_path, monkeypatch):
    """The CPU smoke run: the training stage's own commands, at tiny sizes and short,
    on the bundle's corpus, and a tiny pretrain_cost that its parser accepts."""
    commands = dict(gpu_rehearsal.smoke_commands(str(tmp_path), "/venv/bin/python", "/b/corpus"))
    assert list(commands) == ["corpus", "pretrain_1", "finetune_1", "pretrain_cost"]
    assert commands["corpus"][:5] == ["/venv/bin/python", "-m", "pom.data.synthetic", "--out", "/b/corpus"]
    pre, fine = commands["pretrain_1"], commands["finetune_1"]
    assert pre[1] == gpu_stages.PRETRAIN_SCRIPT and fine[1] == gpu_stages.FINETUNE_SCRIPT
    for argv in (pre, fine):
        keys = [a.split("=", 1)[0] for a in argv[3:]]
        assert len(keys) == len(set(keys))  # each option once
        assert "--device=cpu" in argv and "--data_folder=/b/corpus/LibriSpeech" in argv and "--d_model=32" in argv
        assert "--mixer_options={degree: 2, expansion: 2, implementation: fused}" in argv
    assert "--optimizer_step_limit=4" in pre and "--number_of_epochs=1" in fine and "--precision=fp32" in fine
    import torch

    from benchmarks import pretrain_cost

    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # the parser sets the CPU threads
    args = pretrain_cost.parse_args(commands["pretrain_cost"][3:])
    assert args.tiny and args.device.type == "cpu" and args.experiments == ["pom"] and args.steps == 1


def test_rehearsal_verdict():
    good = "\n".join(f"[preflight] {item}: x" for item in gpu_rehearsal.PREFLIGHT_ITEMS)
    good = good.replace("[preflight] imports: x", "[preflight] imports: 142 modules of the check's code path, ok (3 s)")
    good += "\ngpu-check: no CUDA GPU on this machine (torch.cuda.is_available() is False): nothing run\n"
    good += "make: *** [Makefile:58: gpu-check] Error 2\n"
    assert gpu_rehearsal.judge(good, 2) == []
    assert gpu_rehearsal.judge(good.replace("ok (3 s)", "1 FAILED (3 s)"), 2) == [
        "imports failed: [preflight] imports: 142 modules of the check's code path, 1 FAILED (3 s)"
    ]
    missing = gpu_rehearsal.judge(good.replace("[preflight] triton: x\n", ""), 2)
    assert missing == ["no preflight line 'triton'"]
    stopped = gpu_rehearsal.judge(good.replace("Error 2", "Error 3"), 2)
    assert stopped == ["make gpu-check did not end with the check's exit status 2 (make: 2)"]
    assert "the check did not stop at 'no CUDA GPU on this machine'" in gpu_rehearsal.judge("", 0)
