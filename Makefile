# pom-speech: two commands do everything on a fresh machine.
#   make demo   installs (if needed), then runs the main job on the synthetic corpus
#   make test   installs (if needed), then runs the whole test suite with doctests
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint format demo gpu-check clean-venv system-deps

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
	@# sherpa-onnx (optional: a client of the exported ONNX model, tested when installed)
	$(PY) -m pip install -q sherpa-onnx || echo "warning: sherpa-onnx could not be installed: its test is skipped"
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

# On a machine with a GPU: kernels, short training runs and the efficiency targets in under
# 10 minutes; results and a PASS/FAIL summary under benchmarks/runs/<gpu name>/.
gpu-check: install
	$(PY) benchmarks/gpu_check.py

clean-venv:
	rm -rf $(VENV)
