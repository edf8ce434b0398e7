"""The preflight of ``make gpu-check`` where Python already has a CUDA PyTorch
(a GPU machine's image, a cluster's compute node): one line per item, the
offline bundle (``make gpu-bundle``) installed into a temporary folder, every
import of the check's code path tried, then the check itself, with that folder
and the repository on the path of every process it starts. No network, no
``make install``::

    [preflight] python: 3.12.3 (/usr/bin/python3)
    [preflight] cuda device: NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB), driver 580.95.05
    [preflight] torch: 2.11.0+cu130 (CUDA 13.0)
    [preflight] triton: 3.6.0
    [preflight] c compiler: /usr/bin/gcc (Triton builds its launcher with it)
    [preflight] Python.h: /usr/include/python3.12/Python.h
    [preflight] bundle: gpu-bundle: 24 wheels for CPython 3.12, corpus 0.318 h, 38.6 MiB, built 2026-12-06
    [preflight] free disk: 40.1 GiB here, 40.1 GiB in /tmp
    [preflight] installed: 24 wheels into /tmp/pom-gpu-bundle-1a2b (pip --no-index --no-deps --target, 9 s)
    [preflight] imports: 131 modules of the check's code path, ok (12 s)
    [preflight] running: python -m benchmarks.gpu_check --corpus gpu-bundle/corpus --budget-s 437

A line that ends with ``MISSING`` or ``WARNING`` says what fails because of it.
Exit status: the check's (0 passed, 1 failed, 2 no CUDA device), or 3 when the
preflight itself stops (a bundle for another Python or damaged, an install or an
import that fails: nothing is run).

``--decide`` (the Makefile's test) exits 0 when this Python can run the check
offline (a CUDA build of torch, and the bundle or every package already
there), 1 when ``make install`` is needed; it prints why on one line. Standard
library only at import time: it runs on a bare image.

Examples
--------
python3 -m benchmarks.gpu_preflight --bundle gpu-bundle              # make gpu-check
python3 -m benchmarks.gpu_preflight --bundle gpu-bundle --quick      # make gpu-check GPU_CHECK_ARGS=--quick
python3 -m benchmarks.gpu_preflight --decide --bundle gpu-bundle
"""

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile

from benchmarks import gpu_imports

REPO = gpu_imports.REPO
DEFAULT_BUNDLE = os.path.join(REPO, "gpu-bundle")
MANIFEST = "manifest.json"
#: the whole ``make gpu-check`` (preflight included), seconds: full, --quick
WHOLE_CHECK_S = {False: 480, True: 240}
#: kept for the check's own start (Python, the device query) and its summary
MARGIN_S = 20
LOW_DISK_GIB = 5
EXIT_STOPPED = 3

PROBE = r"""
import json, warnings
info = {}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    try:
        import torch
        info.update(torch=torch.__version__, cuda=torch.version.cuda, available=torch.cuda.is_available())
        if info["available"]:
            p = torch.cuda.get_device_properties(0)
            info.update(device=p.name, capability=f"sm_{p.major}{p.minor}", memory_GiB=round(p.total_memory / 2**30, 1))
    except Exception as err:
        info["error"] = f"{type(err).__name__}: {err}"
    try:
        import triton
        info["triton"] = triton.__version__
    except Exception as err:
        info["triton_error"] = f"{type(err).__name__}: {err}"
info["warnings"] = [str(w.message).splitlines()[0] for w in caught]
print(json.dumps(info))
"""


def say(item, text, stream=None):
    print(f"[preflight] {item}: {text}", file=stream or sys.stdout, flush=True)


# --------------------------------------------------------------------------- #
# The items
# --------------------------------------------------------------------------- #
def probe(python=sys.executable):
    """torch, CUDA and Triton as ``python`` sees them (a subprocess: this one holds no CUDA context)."""
    proc = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=300, cwd=REPO)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return {"error": tail}
    return json.loads(lines[-1])


def driver_version():
    """The NVIDIA driver's version (nvidia-smi, else /proc), or None."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout.split()
            if out:
                return out[0]
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        with open("/proc/driver/nvidia/version", encoding="ascii", errors="replace") as f:
            words = f.readline().split()
        return next((w for w in words if w[:1].isdigit() and "." in w), None)
    except OSError:
        return None


def c_compiler():
    """The C compiler Triton uses for its launcher (``$CC``, else gcc, else clang)."""
    return os.environ.get("CC") or shutil.which("gcc") or shutil.which("clang") or shutil.which("cc")


def python_header():
    """Where Triton looks for ``Python.h`` (the ``posix_prefix`` scheme's include folder)."""
    scheme = sysconfig.get_default_scheme()
    scheme = "posix_prefix" if scheme == "posix_local" else scheme
    return os.path.join(sysconfig.get_paths(scheme=scheme)["include"], "Python.h")


def read_bundle(folder):
    """``(manifest, problem)`` of a bundle folder; the problem (one line, or None)
    says why it cannot be used here: missing, for another Python, damaged."""
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        return None, f"no {MANIFEST} in {folder} (make gpu-bundle writes it)"
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if manifest.get("python") != here:
        return manifest, (
            f"built for Python {manifest.get('python')}, this is {here}: "
            f"make gpu-bundle GPU_BUNDLE_PYTHON={here} on a machine with network"
        )
    for wheel in manifest["wheels"]:
        file = os.path.join(folder, "wheels", wheel["file"])
        if not os.path.isfile(file):
            return manifest, f"{file} is missing"
        digest = hashlib.sha256()
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != wheel["sha256"]:
            return manifest, f"{file} does not match its sha256 in {MANIFEST} (copied only in part?)"
    corpus = manifest.get("corpus")
    if corpus and not os.path.isfile(os.path.join(folder, corpus["folder"], "LibriSpeech", "SYNTHETIC.json")):
        return manifest, f"the corpus {os.path.join(folder, corpus['folder'])} is missing"
    return manifest, None


def describe_bundle(folder, manifest):
    corpus = manifest.get("corpus")
    text = f"{folder}: {len(manifest['wheels'])} wheels for CPython {manifest['python']}"
    text += f", corpus {corpus['audio_hours']} h" if corpus else ", no corpus"
    return text + f", {manifest['size_MiB']} MiB, built {manifest['date']}"


def free_gib(path):
    return shutil.disk_usage(path).free / 2**30


# --------------------------------------------------------------------------- #
# Installing the bundle
# --------------------------------------------------------------------------- #
def has_pip(python=sys.executable):
    return subprocess.run([python, "-m", "pip", "--version"], capture_output=True).returncode == 0


def unpack_wheel(wheel, target):
    """Installs a wheel by unpacking it (what pip does for ``--target``, less
    scripts and headers): the way when this Python has no pip."""
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            parts = info.filename.split("/")
            if parts[0].endswith(".data"):
                if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                    continue
                parts = parts[2:]
            if info.is_dir() or ".." in parts or info.filename.startswith("/"):
                continue
            path = os.path.join(target, *parts)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with archive.open(info) as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst)
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(path, mode | 0o600)


def install_bundle(folder, manifest, target, python=sys.executable):
    """Installs every wheel of the bundle into ``target``: ``pip install
    --no-index --no-deps --target`` (the bundle is the exact set), or unpacked
    where there is no pip or pip fails. Returns how (one phrase); raises
    RuntimeError when neither works."""
    wheels = [os.path.join(folder, "wheels", w["file"]) for w in manifest["wheels"]]
    how = "unpacked: this Python has no pip"
    if has_pip(python):
        argv = [python, "-m", "pip", "install", "--no-index", "--no-deps", "--disable-pip-version-check", "-q"]
        proc = subprocess.run(argv + ["--target", target, *wheels], capture_output=True, text=True)
        if proc.returncode == 0:
            return "pip --no-index --no-deps --target"
        lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        how = f"unpacked: pip failed ({lines[-1] if lines else proc.returncode})"
        shutil.rmtree(target, ignore_errors=True)
        os.makedirs(target)
    try:
        for wheel in wheels:
            unpack_wheel(wheel, target)
    except (OSError, zipfile.BadZipFile) as err:
        raise RuntimeError(f"{how.split(': ', 1)[1]}; unpacking failed too: {err}") from None
    return how


def check_env(target):
    """The environment of the check's processes: the installed bundle and the repository first on the path."""
    env = dict(os.environ)
    paths = [p for p in (target, REPO, env.get("PYTHONPATH")) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


# --------------------------------------------------------------------------- #
# Decide, run
# --------------------------------------------------------------------------- #
def missing_packages():
    """Top-level modules of the check's code path that this Python cannot find."""
    path = gpu_imports.code_path()
    tops = sorted({m.split(".")[0] for m in path.required_third_party()})
    return [top for top in tops if importlib.util.find_spec(top) is None]


def decide(bundle):
    """``(offline, why)``: whether this Python runs the check without ``make install``."""
    torch_spec = importlib.util.find_spec("torch")
    if torch_spec is None:
        return False, f"{sys.executable} has no torch"
    import torch

    if torch.version.cuda is None:
        return False, f"{sys.executable} has torch {torch.__version__} without CUDA"
    base = f"{sys.executable} has torch {torch.__version__} (CUDA {torch.version.cuda})"
    if os.path.isfile(os.path.join(bundle, MANIFEST)):
        return True, f"{base} and the bundle {bundle}: offline preflight"
    missing = missing_packages()
    if not missing:
        return True, f"{base} and every package of the check: preflight without a bundle"
    return False, f"{base} but neither the bundle {bundle} nor {', '.join(missing)}"


def preflight(bundle, check_args, python=sys.executable, run_check=True):
    """Prints the lines, installs the bundle, tries the imports, runs the check;
    returns the exit status."""
    start = time.monotonic()
    quick = "--quick" in check_args
    say("python", f"{sys.version.split()[0]} ({python})")
    info = probe(python)
    if "error" in info and "torch" not in info:
        say("torch", f"cannot be imported ({info['error']}) MISSING")
        return EXIT_STOPPED
    driver = driver_version()
    if info.get("device"):
        say("cuda device", f"{info['device']} ({info['capability']}, {info['memory_GiB']} GiB), driver {driver}")
    else:
        why = info.get("error") or next(
            (w for w in info.get("warnings", []) if "driver" in w.lower()), "torch.cuda.is_available() is False"
        )
        say("cuda device", f"none ({why}; driver {driver or 'not found'}) MISSING")
    say("torch", f"{info['torch']} (CUDA {info['cuda']})")
    triton_error = "not installed: the fused PoM cannot run its kernels"
    say("triton", info.get("triton") or f"{info.get('triton_error', triton_error)} WARNING")
    compiler = c_compiler()
    say(
        "c compiler",
        f"{compiler} (Triton builds its launcher with it)"
        if compiler
        else "none: Triton cannot build its launcher MISSING",
    )
    header = python_header()
    say(
        "Python.h",
        header if os.path.isfile(header) else f"{header} not found: Triton cannot build its launcher MISSING",
    )
    manifest, problem = (None, "none") if bundle is None else read_bundle(bundle)
    if manifest and not problem:
        say("bundle", describe_bundle(os.path.relpath(bundle, REPO) if bundle.startswith(REPO) else bundle, manifest))
    else:
        say("bundle", problem)
    tmp = tempfile.gettempdir()
    disk = f"{free_gib(REPO):.1f} GiB here, {free_gib(tmp):.1f} GiB in {tmp}"
    say("free disk", disk + (" WARNING" if min(free_gib(REPO), free_gib(tmp)) < LOW_DISK_GIB else ""))
    if bundle is not None and problem:
        say("stopped", "the bundle cannot be used here (see above); nothing run", sys.stderr)
        return EXIT_STOPPED
    target = tempfile.mkdtemp(prefix="pom-gpu-bundle-")
    try:
        if manifest:
            t0 = time.monotonic()
            try:
                how = install_bundle(bundle, manifest, target, python)
            except RuntimeError as err:
                say("stopped", f"the bundle could not be installed: {err}", sys.stderr)
                return EXIT_STOPPED
            say("installed", f"{len(manifest['wheels'])} wheels into {target} ({how}, {time.monotonic() - t0:.0f} s)")
        env = check_env(target)
        proc = subprocess.run(
            [python, "-m", "benchmarks.gpu_imports", "--check"], capture_output=True, text=True, env=env, cwd=REPO
        )
        for line in [line for line in proc.stderr.splitlines() if line.startswith("import of ")][:20]:
            say("import", line.removeprefix("import of "), sys.stderr)
        say("imports", (proc.stdout.strip().splitlines() or ["no answer"])[-1].removeprefix("imports: "))
        if proc.returncode != 0:
            say("stopped", "the check's code path cannot be imported (see above); nothing run", sys.stderr)
            return EXIT_STOPPED
        args = list(check_args)
        if manifest and manifest.get("corpus") and "--corpus" not in args:
            args += ["--corpus", os.path.join(bundle, manifest["corpus"]["folder"])]
        if "--budget-s" not in args:
            left = WHOLE_CHECK_S[quick] - (time.monotonic() - start) - MARGIN_S
            args += ["--budget-s", str(int(left))]
        say("running", "python -m benchmarks.gpu_check " + " ".join(args))
        if not run_check:
            return 0
        return subprocess.run([python, "-m", "benchmarks.gpu_check", *args], env=env, cwd=REPO).returncode
    finally:
        shutil.rmtree(target, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # the other options are the check's
    )
    parser.add_argument("--bundle", default=DEFAULT_BUNDLE, help="the offline bundle (default gpu-bundle/)")
    parser.add_argument("--decide", action="store_true", help="exit 0 if this Python runs the check offline")
    args, check_args = parser.parse_known_args(argv)
    bundle = os.path.abspath(args.bundle)
    if args.decide:
        offline, why = decide(bundle)
        print(f"gpu-check: {why}", file=sys.stderr)
        return 0 if offline else 1
    return preflight(bundle if os.path.isdir(bundle) else None, check_args)


if __name__ == "__main__":
    sys.exit(main())
