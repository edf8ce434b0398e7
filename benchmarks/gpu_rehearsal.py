"""``make gpu-rehearsal``: the offline path of ``make gpu-check`` rehearsed on a
machine without a GPU, as a GPU machine's image would meet it:

1. ``image``: a fresh virtual environment (``python -m venv``, pip from
   ensurepip) whose only packages are the image's (``gpu_imports.IMAGE`` and
   what they require: torch, triton, numpy, ...), taken from this environment
   without any download (a folder of links to their installed files, on the
   venv's path through a ``.pth`` file); it must import torch and must not
   find speechbrain;
2. ``bundle``: ``benchmarks.gpu_bundle`` for this machine's Python (needs PyPI);
3. ``check``: ``make gpu-check GPU_PYTHON=<the venv's python> GPU_BUNDLE=<the
   bundle> GPU_OFFLINE=1`` with the network cut (``unshare -rn``: a user and
   network namespace, where the kernel allows it) and ``PIP_NO_INDEX=1``.

4. ``CPU smoke``: the bundle installed as the preflight does, the training
   stage's corpus command (the bundle's corpus, no espeak-ng on ``PATH``), its
   first pre-training and fine-tuning at tiny sizes and a tiny ``pretrain_cost``
   on the CPU, offline, with the image's packages and the bundle only: the
   check's code runs, not only imports (FLAC through the bundle's libsndfile,
   torchaudio's extension beside the image's torch, the recipes end to end).

It passes when the preflight printed every item, installed the bundle and
imported every module of the check's code path, the check stopped at "no CUDA
GPU" with exit status 2 (make reports ``Error 2``), and every smoke command
succeeded. Exit status 0 then, 1 otherwise (what was missing on one line each).

Example
-------
python -m benchmarks.gpu_rehearsal                 # or: make gpu-rehearsal
python -m benchmarks.gpu_rehearsal --keep --dir /tmp/rehearsal
"""

import argparse
import importlib.metadata as metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from benchmarks import gpu_imports, gpu_preflight, gpu_stages

REPO = gpu_imports.REPO
#: the preflight's items, each on a line of its own
PREFLIGHT_ITEMS = (
    "python",
    "cuda device",
    "torch",
    "triton",
    "c compiler",
    "Python.h",
    "bundle",
    "free disk",
    "installed",
    "imports",
    "running",
)
NO_GPU = "no CUDA GPU on this machine"
#: the CPU smoke run: a tiny encoder (the packages are rehearsed, not the speed) and short runs
SMOKE_MODEL = {"d_model": 32, "num_layers": 1, "d_ffn": 64, "kernel_size": 7, "cnn_channels": "(8,8)"}
SMOKE_MODEL["cnn_output_size"] = 160
SMOKE_CHANGES = {
    "pretrain": {"precision": "fp32", "num_workers": 0, "max_batch_len": 40, "global_batch_seconds": 40},
    "finetune": {"precision": "fp32", "num_workers": 0, "dnn_neurons": 32, "train_splits": "[train-clean-100]"},
}
SMOKE_CHANGES["pretrain"].update(cb_vocab=64, train_num_buckets=4, log_interval=2)
SMOKE_LIMITS = {"pretrain_1": "--optimizer_step_limit=4", "finetune_1": "--number_of_epochs=1"}


def top_level_entries(dist):
    """The names a distribution installs at the top of site-packages."""
    return {f.parts[0] for f in dist.files or [] if f.parts[0] not in ("..", "__pycache__")}


def link_image(folder, python_version=None):
    """Links the installed files of the image's distributions into ``folder``;
    returns ``{distribution: version}``. An entry that another, non-image
    distribution also installs is an error (the venv would see it)."""
    python_version = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
    image = gpu_imports.requirement_closure(gpu_imports.IMAGE, python_version)
    missing = sorted(name for name, version in image.items() if version is None)
    if missing:
        raise RuntimeError(f"this environment lacks the image's {', '.join(missing)}: nothing to link")
    owners = {}
    for dist in metadata.distributions():
        for entry in top_level_entries(dist):
            owners.setdefault(entry, set()).add(gpu_imports.canonical(dist.metadata["Name"]))
    os.makedirs(folder, exist_ok=True)
    for name in image:
        dist = metadata.distribution(name)
        for entry in top_level_entries(dist):
            others = owners[entry] - set(image)
            if others:
                raise RuntimeError(f"{entry} is installed by {name} and by {', '.join(sorted(others))}")
            link = os.path.join(folder, entry)
            if not os.path.lexists(link):
                os.symlink(os.path.abspath(str(dist.locate_file(entry))), link)
    return image


def make_image_venv(folder):
    """A venv at ``folder`` holding pip and the image's packages (linked from
    this environment); returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--clear", folder], check=True)
    python = os.path.join(folder, "bin", "python")
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    image_dir = os.path.join(folder, "image")
    link_image(image_dir)
    with open(os.path.join(site, "gpu-image.pth"), "w", encoding="utf-8") as f:
        f.write(image_dir + "\n")
    probe = "import importlib.util as u, torch; print(torch.__version__, u.find_spec('speechbrain') is None)"
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True, env=clean_env(), cwd=folder)
    if out.returncode != 0 or not out.stdout.strip().endswith("True"):
        raise RuntimeError(f"the image venv is not the image's: {out.stdout.strip()} {out.stderr.strip()[-300:]}")
    return python


def clean_env(**extra):
    """This process's environment without what would leak into the rehearsal."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PYTHONNOUSERSITE="1", **extra)
    return env


def network_cut():
    """``[unshare, "-rn"]`` where a user and network namespace can be made, else []."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode == 0:
        return [unshare, "-rn"]
    return []


def smoke_commands(folder, python, corpus):
    """``[(name, argv)]``: the training stage's corpus command, its first pre-training
    and fine-tuning at tiny sizes on the CPU (short), and a tiny ``pretrain_cost``."""
    commands = dict(gpu_stages.training_commands(folder, True, python, "cpu", SMOKE_MODEL, SMOKE_CHANGES, corpus))
    smoke = [("corpus", commands["corpus"])]
    for name, limit in SMOKE_LIMITS.items():
        last = {arg.split("=", 1)[0]: arg for arg in commands[name][3:] + [limit]}  # a repeated option: the last
        smoke.append((name, commands[name][:3] + list(last.values())))
    cost = [python, "-m", "benchmarks.pretrain_cost", "--device", "cpu", "--threads", "1", "--tiny", "--steps", "1"]
    cost += ["--warmup", "0", "--experiments", "pom", "--set", "max_batch_len=4", "global_batch_seconds=16"]
    return smoke + [("pretrain_cost", cost + ["--out", os.path.join(folder, "pretrain_cost")])]


def cpu_smoke(folder, python, bundle):
    """Installs the bundle as the preflight does and runs :func:`smoke_commands`
    offline with only the venv on ``PATH``; returns the problems (one line each)."""
    with open(os.path.join(bundle, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    target = os.path.join(folder, "site")
    os.makedirs(target, exist_ok=True)
    gpu_preflight.install_bundle(bundle, manifest, target, python)
    env = clean_env(PYTHONPATH=os.pathsep.join([target, REPO]), OMP_NUM_THREADS="1", PIP_NO_INDEX="1")
    env["PATH"] = os.path.dirname(python)  # no espeak-ng, as on the GPU machine
    log, problems = os.path.join(folder, "smoke.log"), []
    for name, argv in smoke_commands(os.path.join(folder, "smoke"), python, os.path.join(bundle, "corpus")):
        t0 = time.monotonic()
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"\n$ {' '.join(argv)}\n")
            f.flush()
            code = subprocess.run(network_cut() + argv, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        status = "ok" if code.returncode == 0 else f"exit status {code.returncode}: {gpu_stages.last_line(log)}"
        print(f"[rehearsal] CPU smoke, {name}: {status} ({time.monotonic() - t0:.0f} s)", flush=True)
        if code.returncode:
            problems.append(f"CPU smoke, {name}: {status}")
    return problems


def judge(output, make_status):
    """What the rehearsal misses in ``make gpu-check``'s output (empty: it passed)."""
    problems = []
    for item in PREFLIGHT_ITEMS:
        if f"[preflight] {item}:" not in output:
            problems.append(f"no preflight line '{item}'")
    imports = [line for line in output.splitlines() if line.startswith("[preflight] imports:")]
    if imports and ", ok (" not in imports[-1]:
        problems.append(f"imports failed: {imports[-1]}")
    if NO_GPU not in output:
        problems.append(f"the check did not stop at '{NO_GPU}'")
    if make_status == 0 or "Error 2" not in output:
        problems.append(f"make gpu-check did not end with the check's exit status 2 (make: {make_status})")
    return problems


def run_make(folder, python, bundle, make="make"):
    """``make gpu-check`` in the image venv, offline; returns ``(status, output)``."""
    variables = [f"GPU_PYTHON={python}", f"GPU_BUNDLE={bundle}", "GPU_OFFLINE=1"]
    variables.append(f"GPU_CHECK_ARGS=--out {os.path.join(folder, 'out')}")
    argv = network_cut() + [make, "--no-print-directory", "-C", REPO, "gpu-check", *variables]
    print(f"[rehearsal] $ {' '.join(argv)}", flush=True)
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env(PIP_NO_INDEX="1")
    )
    lines = []
    for line in proc.stdout:
        print("    " + line, end="", flush=True)
        lines.append(line)
    return proc.wait(), "".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", help="working folder (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    args = parser.parse_args(argv)
    folder = os.path.abspath(args.dir) if args.dir else tempfile.mkdtemp(prefix="pom-gpu-rehearsal-")
    os.makedirs(folder, exist_ok=True)
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    start, times = time.monotonic(), {}
    try:
        t0 = time.monotonic()
        python = make_image_venv(os.path.join(folder, "venv"))
        times["image venv"] = time.monotonic() - t0
        print(f"[rehearsal] image venv: {python} (the image's packages only, linked from {sys.prefix})", flush=True)
        t0 = time.monotonic()
        bundle = os.path.join(folder, "bundle")
        build = [sys.executable, "-m", "benchmarks.gpu_bundle", "--out", bundle, "--python-version", here]
        subprocess.run(build, check=True, cwd=REPO, env=clean_env(PYTHONPATH=REPO))
        times["bundle"] = time.monotonic() - t0
        t0 = time.monotonic()
        status, output = run_make(folder, python, bundle)
        times["make gpu-check"] = time.monotonic() - t0
        t0 = time.monotonic()
        smoke = cpu_smoke(folder, python, bundle)
        times["CPU smoke"] = time.monotonic() - t0
    except (subprocess.CalledProcessError, RuntimeError, OSError) as err:
        print(f"[rehearsal] FAIL: {err}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    problems = judge(output, status) + smoke
    took = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in times.items())
    for problem in problems:
        print(f"[rehearsal] {problem}", file=sys.stderr)
    cut = "without network" if network_cut() else "network not cut (no user namespaces here)"
    verdict = "PASS" if not problems else "FAIL"
    print(f"[rehearsal] {verdict} in {time.monotonic() - start:.0f} s ({took}; {cut})", flush=True)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
