"""``make gpu-bundle``: one folder with what ``make gpu-check`` needs on a GPU
machine without network, beyond the machine's image (``benchmarks/gpu_imports.py``
says what the image holds and what the check's code path imports)::

    <out>/wheels/*.whl           CPython wheels (manylinux x86-64) of every distribution of
                                 gpu_imports.BUNDLE: the versions installed here, torchaudio
                                 at the image's torch version
    <out>/corpus/LibriSpeech/    the training stage's synthetic corpus (pom.data.synthetic,
                                 made here: the GPU machine has no espeak-ng)
    <out>/manifest.json          Python version, platforms, wheels (file, distribution,
                                 version, sha256), corpus options, size, date

Run where PyPI can be reached (``pip download``); at most 48 MiB (a device that
receives the working tree and the carried folders, 64 MiB in all, takes it).
``make gpu-check`` finds it (``GPU_BUNDLE``, default ``gpu-bundle/``) and
installs it with ``pip install --no-index --no-deps --target`` into a
temporary folder (``benchmarks/gpu_preflight.py``).

Examples
--------
python -m benchmarks.gpu_bundle                                   # gpu-bundle/, for the image's Python 3.12
python -m benchmarks.gpu_bundle --python-version 3.11 --out /tmp/b  # for a Python 3.11 machine (the rehearsal)
python -m benchmarks.gpu_bundle --list                            # the distributions, nothing downloaded
"""

import argparse
import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time

from benchmarks import gpu_imports
from benchmarks.gpu_stages import CORPUS_HOURS, CORPUS_SEED

REPO = gpu_imports.REPO
DEFAULT_OUT = os.path.join(REPO, "gpu-bundle")
MANIFEST = "manifest.json"
LIMIT_MIB = 48
#: the image's torch wheels are manylinux_2_28: so is its glibc
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")
WHEEL_NAME = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)-.+\.whl$")


def pip_download_command(requirements, dest, python_version, python=sys.executable):
    """``pip download`` of exactly ``requirements`` (``{name: version}``): binary
    wheels for CPython ``python_version`` on Linux x86-64, no dependencies."""
    abi = "cp" + python_version.replace(".", "")
    argv = [python, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps", "--only-binary=:all:"]
    argv += ["--python-version", python_version, "--implementation", "cp", "--abi", abi, "--abi", "abi3"]
    argv += ["--abi", "none", *[a for p in PLATFORMS for a in ("--platform", p)], "--dest", dest]
    return argv + [f"{name}=={version}" for name, version in sorted(requirements.items())]


def download(requirements, dest, python_version):
    """Runs :func:`pip_download_command`; raises with pip's last line on failure."""
    proc = subprocess.run(pip_download_command(requirements, dest, python_version), capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        raise RuntimeError(f"pip download failed: {lines[-1] if lines else proc.returncode}")


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_bytes(folder):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files)


def wheel_records(folder, requirements):
    """``[{file, name, version, sha256}]`` of the wheels in ``folder``, one per
    requirement (a missing or unexpected wheel is an error)."""
    records, seen = [], set()
    for file in sorted(os.listdir(folder)):
        match = WHEEL_NAME.match(file)
        if not match:
            raise RuntimeError(f"{folder}: {file} is not a wheel")
        name = gpu_imports.canonical(match["name"])
        if name not in requirements:
            raise RuntimeError(f"{folder}: {file} is not one of the bundle's distributions")
        seen.add(name)
        records.append(
            {"file": file, "name": name, "version": match["version"], "sha256": sha256(os.path.join(folder, file))}
        )
    missing = sorted(set(requirements) - seen)
    if missing:
        raise RuntimeError(f"{folder}: no wheel for {', '.join(missing)}")
    return records


def make_corpus(folder):
    """The training stage's corpus (the options of ``gpu_stages.training_commands``)."""
    from pom.data.synthetic import make_synthetic_librispeech

    return make_synthetic_librispeech(folder, hours=CORPUS_HOURS, seed=CORPUS_SEED, progress=False)


def build(out=DEFAULT_OUT, python_version=gpu_imports.IMAGE_PYTHON, corpus=True, fetch=download, limit_mib=LIMIT_MIB,
          requirements=None):  # fmt: skip
    """Writes the bundle into ``out``; returns its manifest. ``fetch(requirements,
    dest, python_version)`` puts the wheels into ``dest`` (tests pass their own)."""
    if requirements is None:
        requirements, unprovided = gpu_imports.bundle_requirements(python_version=python_version)
        if unprovided:
            raise RuntimeError(f"nothing provides these imports of the check's code path: {unprovided}")
        if set(requirements) != set(gpu_imports.BUNDLE):
            print(
                f"gpu-bundle: warning: the code path needs {sorted(requirements)}, not gpu_imports.BUNDLE", flush=True
            )
    os.makedirs(out, exist_ok=True)
    manifest_path = os.path.join(out, MANIFEST)
    if os.path.exists(manifest_path):
        os.remove(manifest_path)  # a bundle without its manifest is refused by the preflight
    start = time.monotonic()
    wheels, partial = os.path.join(out, "wheels"), os.path.join(out, "wheels.partial")
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    fetch(requirements, partial, python_version)
    records = wheel_records(partial, requirements)
    shutil.rmtree(wheels, ignore_errors=True)
    os.replace(partial, wheels)
    corpus_info = None
    if corpus:
        root = make_corpus(os.path.join(out, "corpus"))
        with open(os.path.join(root, "SYNTHETIC.json"), encoding="utf-8") as f:
            info = json.load(f)
        corpus_info = {"folder": "corpus", **info["options"], "audio_hours": info["audio_hours"]}
    else:
        shutil.rmtree(os.path.join(out, "corpus"), ignore_errors=True)
    size = folder_bytes(out)
    manifest = {
        "python": python_version,
        "abi": "cp" + python_version.replace(".", ""),
        "platforms": list(PLATFORMS),
        "wheels": records,
        "corpus": corpus_info,
        "size_bytes": size,
        "size_MiB": round(size / 2**20, 1),
        "date": datetime.date.today().isoformat(),
        "build_seconds": round(time.monotonic() - start, 1),
    }
    if size > limit_mib * 2**20:
        raise RuntimeError(f"{out} holds {size / 2**20:.1f} MiB, more than the {limit_mib} MiB allowed")
    with open(manifest_path, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    return manifest


def describe(manifest):
    """One line: wheels, Python, corpus, size."""
    corpus = manifest.get("corpus")
    text = f"{len(manifest['wheels'])} wheels for CPython {manifest['python']}"
    text += f", corpus {corpus['audio_hours']} h" if corpus else ", no corpus"
    return text + f", {manifest['size_MiB']} MiB, built {manifest['date']}"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default=DEFAULT_OUT, help="the bundle folder (default gpu-bundle/)")
    parser.add_argument(
        "--python-version", default=gpu_imports.IMAGE_PYTHON, help="the GPU machine's Python (default: the image's)"
    )
    parser.add_argument("--no-corpus", action="store_true", help="wheels only (the GPU machine has espeak-ng)")
    parser.add_argument("--list", action="store_true", help="print the distributions and versions; download nothing")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"3\.\d+", args.python_version):
        parser.error(f"--python-version must look like 3.12, got {args.python_version!r}")
    if args.list:
        requirements, unprovided = gpu_imports.bundle_requirements(python_version=args.python_version)
        print("\n".join(f"{name}=={version}" for name, version in requirements.items()))
        for module, where in unprovided.items():
            print(f"unprovided: {module} ({', '.join(where)})", file=sys.stderr)
        return 1 if unprovided else 0
    try:
        manifest = build(args.out, args.python_version, corpus=not args.no_corpus)
    except (RuntimeError, OSError) as err:
        print(f"gpu-bundle: {err}", file=sys.stderr)
        return 1
    print(f"gpu-bundle: {args.out}: {describe(manifest)} ({manifest['build_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
