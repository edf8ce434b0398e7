# pom-speech: two commands do everything on a fresh machine.
#   make demo   installs (if needed), then runs the main job on the synthetic corpus
#   make test   installs (if needed), then runs the whole test suite with doctests
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test demo clean-venv system-deps

install: $(STAMP)

# Debian packages: espeak-ng (the synthetic corpus) and sox-free FLAC through soundfile.
system-deps:
	@if ! command -v espeak-ng >/dev/null 2>&1; then \
		echo "Installing espeak-ng (Debian)"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
		$$SUDO apt-get update -qq && $$SUDO DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null; \
	fi

$(STAMP): requirements.txt pyproject.toml
	$(MAKE) system-deps
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

test: install
	$(PY) -m pytest -q

clean-venv:
	rm -rf $(VENV)
