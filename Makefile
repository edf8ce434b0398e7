# pom-speech: two commands do everything on a fresh machine.
#   make demo   installs (if needed), then runs the main job on the synthetic corpus
#   make test   installs (if needed), then runs the whole test suite with doctests
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint format demo gpu-check gpu-bundle gpu-rehearsal clean-venv system-deps

install: $(STAMP)

# Debian packages: espeak-ng (the synthetic corpus) and sox-free FLAC through soundfile.
system-deps:
	@if ! command -v espeak-ng >/dev/null 2>&1; then \
		echo "Installing espeak-ng (Debian)"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null; \
	fi

$(STAMP): requirements.txt pyproject.toml Makefile
	$(MAKE) system-deps
	test -x $(PY) || python3 -m venv $(VENV)
	@# a second try without pip's cache: a download cut short fails its hash check once
	$(PY) -m pip install -q -r requirements.txt || $(PY) -m pip install -q --no-cache-dir -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	@# n-gram LM decoding (optional: kenlm compiles from source; ~40 s, needs a C++ compiler)
	$(PY) -m pip install -q kenlm pygtrie || echo "warning: kenlm could not be built: decoding with an n-gram LM (kenlm_model_path) is unavailable"
	@# sherpa-onnx (optional: a client of the exported ONNX model, tested when installed, with
	@# kaldi-native-fbank computing its features in the test)
	$(PY) -m pip install -q sherpa-onnx kaldi-native-fbank || echo "warning: sherpa-onnx could not be installed: its test is skipped"
	touch $(STAMP)

test: install
	$(PY) -m pytest -q

# One style: ruff (lint + import order) and its formatter, line length 120 (pyproject.toml), codespell.
lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/codespell pom recipes tests benchmarks hparams README.md Makefile

format: install
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# Synthesize the small corpus, pre-train a small PoM encoder with BEST-RQ, fine-tune it with CTC,
# evaluate and print the WER table (outputs in results/demo; DEMO_ARGS for options, e.g. --hours 3).
demo: install
	$(PY) -m pom.demo $(DEMO_ARGS)

# On a machine with a GPU: kernels, short training runs, the cost of the paper's pre-training and
# the efficiency targets in 8 minutes (GPU_CHECK_ARGS=--quick: 4); results and a PASS/FAIL summary
# under benchmarks/runs/<gpu name>/. Where $(GPU_PYTHON) has a CUDA torch and the bundle is there
# (or every package is), no install and no network: benchmarks/gpu_preflight.py checks the machine,
# installs the bundle into a temporary folder and runs the check. Otherwise: make install, then the check.
GPU_PYTHON ?= python3
GPU_BUNDLE ?= gpu-bundle
GPU_BUNDLE_PYTHON ?= 3.12
GPU_CHECK_ARGS ?=
gpu-check:
	@if $(GPU_PYTHON) -m benchmarks.gpu_preflight --decide --bundle "$(GPU_BUNDLE)"; then \
		$(GPU_PYTHON) -m benchmarks.gpu_preflight --bundle "$(GPU_BUNDLE)" $(GPU_CHECK_ARGS); \
	elif [ -n "$(GPU_OFFLINE)" ]; then \
		echo "gpu-check: GPU_OFFLINE is set: no make install" >&2; exit 3; \
	else \
		$(MAKE) install && $(PY) -m benchmarks.gpu_check $(GPU_CHECK_ARGS); \
	fi

# Where the network is: the wheels the GPU image lacks (CPython $(GPU_BUNDLE_PYTHON), manylinux x86-64)
# and the check's synthetic corpus, in $(GPU_BUNDLE)/ (git-ignored, at most 48 MiB) for make gpu-check.
gpu-bundle:
	@test -x $(PY) || $(MAKE) install
	$(PY) -m benchmarks.gpu_bundle --out "$(GPU_BUNDLE)" --python-version $(GPU_BUNDLE_PYTHON)

# make gpu-check's offline path rehearsed on this machine (no GPU needed): a fresh venv holding only the
# image's packages (from $(VENV), no download), a bundle for this Python, make gpu-check in it without
# network (it must stop at "no CUDA GPU", exit 2), then the check's training runs, tiny, on the CPU.
gpu-rehearsal:
	@test -x $(PY) || $(MAKE) install
	$(PY) -m benchmarks.gpu_rehearsal

clean-venv:
	rm -rf $(VENV)
