"""What the GPU check's code path imports, and who provides it: the GPU
machine's image or the bundle that ``make gpu-bundle`` writes.

The code path is what ``make gpu-check`` runs: the modules and scripts of its
stages (:data:`ENTRY_MODULES`, :data:`ENTRY_SCRIPTS`), every first-party module
they import, followed statically (``import`` statements anywhere in a file,
``importlib.import_module("pom.<package>." + ...)``, which takes the whole
package, and the classes the YAML files name with ``!new:``, ``!name:`` or
``!apply:``), and every third-party module those import. An import inside a
``try`` whose handler catches ``ImportError`` (or ``Exception``) is optional.

The image holds :data:`IMAGE` and what they require; the bundle holds
:data:`BUNDLE`, the distributions of the other third-party imports and what
they require (Requires-Dist of the installed ones, markers evaluated for the
image's Python). ``tests/test_gpu_offline.py`` derives that list from the code
and fails when it differs from :data:`BUNDLE`, or when the path imports a
module nothing provides.

``python -m benchmarks.gpu_imports --check`` imports every module of the path
(what the preflight of ``make gpu-check`` runs, with the bundle on the path);
``--list`` prints them. Standard library only (it runs on a bare image).

Example
-------
>>> path = code_path()
>>> "pom.ops.polynomial.fused" in path.first_party and "benchmarks.efficiency" in path.first_party
True
>>> sorted({m.split(".")[0] for m in path.required_third_party()})[:4]
['hyperpyyaml', 'matplotlib', 'numpy', 'ruamel']
"""

import argparse
import ast
import glob
import importlib
import importlib.util
import os
import re
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRST_PARTY = ("pom", "benchmarks")

#: the modules the check runs (``python -m``), its own modules included
ENTRY_MODULES = (
    "benchmarks.gpu_check",
    "benchmarks.check",
    "benchmarks.efficiency",
    "benchmarks.floor",
    "benchmarks.pretrain_cost",
    "pom.data.synthetic",
)
#: the recipes it runs as scripts
ENTRY_SCRIPTS = ("recipes/LibriSpeech/pretrain/train.py", "recipes/LibriSpeech/finetune/train.py")
#: the YAML files its recipes and benchmarks load
YAML_FOLDERS = ("hparams/pretrain", "hparams/finetune", "hparams/encoders")

#: the GPU machine's image (python3 3.12): these distributions and what they require
IMAGE = (
    "torch", "triton", "numpy", "scipy", "sentencepiece", "tqdm", "tensorboard",
    "matplotlib", "onnx", "onnxruntime", "pytest",
)  # fmt: skip
IMAGE_PYTHON = "3.12"
#: torchaudio must match the image's torch (2.11.0+cu130): PyPI's torchaudio of that version
IMAGE_TORCH = "2.11.0"

#: what the bundle holds: the distributions of the path's other imports and their requirements
BUNDLE = (
    "speechbrain", "hyperpyyaml", "ruamel-yaml", "ruamel-yaml-clib", "pyyaml", "soundfile", "cffi",
    "pycparser", "torchaudio", "joblib", "huggingface-hub", "hf-xet", "httpx2", "httpcore2", "h11",
    "anyio", "idna", "certifi", "requests", "urllib3", "charset-normalizer", "click", "cloudpickle",
    "truststore",
)  # fmt: skip

#: third-party modules imported on the path only behind a switch the check leaves off: module -> why
SWITCHED_OFF = {"wandb": "imported only with use_wandb: True (pom.recipe.tracking); the check logs no W&B run"}

YAML_TAG = re.compile(r"!(?:new|name|apply):([A-Za-z_][\w.]*)")


class CodePath:
    """The first-party modules of the path (name -> file) and the third-party
    modules they import (dotted name -> ``[(file, optional), ...]``)."""

    def __init__(self):
        self.first_party, self.third_party = {}, {}

    def required_third_party(self):
        """Third-party modules imported somewhere without a guard."""
        return sorted(m for m, uses in self.third_party.items() if any(not optional for _, optional in uses))


def module_file(name, repo=REPO):
    """The file of first-party module ``name`` (``None`` if there is none)."""
    base = os.path.join(repo, *name.split("."))
    for path in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(path):
            return path
    return None


def package_modules(package, repo=REPO):
    """Every module of a first-party package (its ``__init__`` included)."""
    folder = os.path.join(repo, *package.split("."))
    names = [package]
    for path in sorted(glob.glob(os.path.join(folder, "*.py"))):
        stem = os.path.basename(path)[:-3]
        if stem != "__init__":
            names.append(f"{package}.{stem}")
    return names


def is_stdlib(name):
    top = name.split(".")[0]
    return top in sys.stdlib_module_names or top == "__future__"


def _catches_import_errors(node):
    for handler in node.handlers:
        kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        for kind in kinds:
            if kind is None or (
                isinstance(kind, ast.Name) and kind.id in ("ImportError", "ModuleNotFoundError", "Exception")
            ):
                return True
    return False


def file_imports(path, module=None):
    """``[(dotted name, optional), ...]`` imported by a Python file, and the
    packages it loads through ``importlib.import_module("<package>." + ...)``."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = module.rsplit(".", 1)[0] if module else ""
    if module and path.endswith("__init__.py"):
        package = module
    found, dynamic = [], []

    def visit(node, optional):
        if isinstance(node, ast.Try):
            guarded = optional or _catches_import_errors(node)
            for child in node.body:
                visit(child, guarded)
            for child in node.handlers + node.orelse + node.finalbody:
                visit(child, optional)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, optional) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            found.append((base, optional))
            found.extend((f"{base}.{alias.name}", optional) for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module" and node.args:
            arg = node.args[0]
            first = arg.values[0] if isinstance(arg, ast.JoinedStr) and arg.values else arg
            if isinstance(first, ast.Constant) and isinstance(first.value, str) and first.value.endswith("."):
                dynamic.append(first.value[:-1])
        for child in ast.iter_child_nodes(node):
            visit(child, optional)

    visit(tree, False)
    return found, dynamic


def yaml_references(folders=YAML_FOLDERS, repo=REPO):
    """Dotted names of the objects that the YAML files instantiate or name."""
    names = set()
    for folder in folders:
        for path in glob.glob(os.path.join(repo, folder, "**", "*.yaml"), recursive=True):
            with open(path, encoding="utf-8") as f:
                names.update(YAML_TAG.findall(f.read()))
    return sorted(names)


def code_path(modules=ENTRY_MODULES, scripts=ENTRY_SCRIPTS, yaml_folders=YAML_FOLDERS, repo=REPO):
    """The :class:`CodePath` of the check (or of other entry points, for tests)."""
    path = CodePath()
    todo = [(m, module_file(m, repo)) for m in modules]
    todo += [(f"script:{s}", os.path.join(repo, s)) for s in scripts]
    for ref in yaml_references(yaml_folders, repo):
        owner = ref.rsplit(".", 1)[0]  # a class or function of module `owner`
        if ref.split(".")[0] in FIRST_PARTY:
            todo.append((owner, module_file(owner, repo) or module_file(ref, repo)))
        else:
            path.third_party.setdefault(owner, []).append(("yaml", False))
    seen = set()
    while todo:
        name, file = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if file is None:
            raise FileNotFoundError(f"first-party module {name} of the GPU check's code path has no file in {repo}")
        path.first_party[name] = file
        module = None if name.startswith("script:") else name
        imports, dynamic = file_imports(file, module)
        for package in dynamic:
            if package.split(".")[0] in FIRST_PARTY:
                todo += [(m, module_file(m, repo)) for m in package_modules(package, repo)]
        for imported, optional in imports:
            if not imported or is_stdlib(imported):
                continue
            if imported.split(".")[0] in FIRST_PARTY:
                parts = imported.split(".")
                for i in range(1, len(parts) + 1):  # the packages above run too
                    prefix = ".".join(parts[:i])
                    if module_file(prefix, repo):
                        todo.append((prefix, module_file(prefix, repo)))
                continue
            optional = optional or imported.split(".")[0] in SWITCHED_OFF
            path.third_party.setdefault(imported, []).append((os.path.relpath(file, repo), optional))
    return path


# --------------------------------------------------------------------------- #
# Who provides what (needs the installed distributions' metadata)
# --------------------------------------------------------------------------- #
def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_closure(roots, python_version=IMAGE_PYTHON):
    """``{distribution: installed version or None}``: ``roots`` and what they
    require here (markers evaluated for CPython ``python_version`` on Linux x86-64)."""
    import importlib.metadata as metadata

    from packaging.requirements import Requirement

    env = {"python_version": python_version, "python_full_version": python_version + ".0", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix", "extra": "",
           "implementation_name": "cpython", "platform_python_implementation": "CPython"}  # fmt: skip
    found, done, todo = {}, set(), [(canonical(r), "") for r in roots]
    while todo:
        name, extra = todo.pop()  # a requirement with extras asks for what the dist needs for them
        if (name, extra) in done:
            continue
        done.add((name, extra))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            found[name] = None
            continue
        found[name] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate(dict(env, extra=extra)):
                todo += [(canonical(req.name), "")] + [(canonical(req.name), e) for e in req.extras]
    return found


def providers():
    """Top-level module -> the installed distributions providing it."""
    import importlib.metadata as metadata

    return {top: [canonical(d) for d in dists] for top, dists in metadata.packages_distributions().items()}


def bundle_requirements(path=None, python_version=IMAGE_PYTHON):
    """What the bundle must hold for ``path`` (default: the check's): ``({distribution:
    version}, {unprovided top-level module: where it is imported})``; the versions
    are those installed here (torchaudio: the image's torch version)."""
    path = path or code_path()
    image = requirement_closure(IMAGE, python_version)
    owners = providers()
    roots, unprovided = set(), {}
    for module in path.required_third_party():
        top = module.split(".")[0]
        dists = owners.get(top)
        if not dists:
            unprovided[top] = sorted({where for where, optional in path.third_party[module] if not optional})
        elif not any(d in image for d in dists):
            roots.update(dists)
    closure = requirement_closure(sorted(roots), python_version)
    bundle = {name: version for name, version in closure.items() if name not in image}
    for name, version in bundle.items():
        if version is None:
            unprovided[name] = ["a requirement that is not installed here"]
    if "torchaudio" in bundle:
        bundle["torchaudio"] = IMAGE_TORCH
    return {n: v for n, v in sorted(bundle.items()) if v is not None}, unprovided


# --------------------------------------------------------------------------- #
# The import check (the preflight runs it in a subprocess, bundle on the path)
# --------------------------------------------------------------------------- #
def import_all(path=None, repo=REPO):
    """Imports every module of ``path``; returns ``[(module, error line)]`` of those that fail."""
    path = path or code_path(repo=repo)
    failures = []
    names = sorted(path.first_party) + path.required_third_party()
    for name in names:
        try:
            if name.startswith("script:"):
                spec = importlib.util.spec_from_file_location(f"_gpu_check_{len(failures)}", path.first_party[name])
                spec.loader.exec_module(importlib.util.module_from_spec(spec))  # defines, runs no main()
            elif name in path.third_party and importlib.util.find_spec(name.split(".")[0]) is not None:
                try:
                    importlib.import_module(name)
                except ModuleNotFoundError as err:  # `from x import name`: name may be an attribute
                    if err.name != name:
                        raise
                    importlib.import_module(name.rsplit(".", 1)[0])
            else:
                importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 -- every failure is reported, one line each
            failures.append((name, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"))
    return failures, len(names)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="import every module of the path; exit 1 if one fails")
    parser.add_argument("--list", action="store_true", help="print the first-party and third-party modules")
    args = parser.parse_args(argv)
    path = code_path()
    if args.list or not args.check:
        print("\n".join(sorted(path.first_party)))
        print("\n".join(f"{m} (third party)" for m in path.required_third_party()))
        return 0
    start = time.monotonic()
    failures, count = import_all(path)
    for name, error in failures:
        print(f"import of {name} failed: {error}", file=sys.stderr)
    status = "ok" if not failures else f"{len(failures)} FAILED"
    print(f"imports: {count} modules of the check's code path, {status} ({time.monotonic() - start:.0f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
