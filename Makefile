# Two commands set up a fresh machine and do the work:
#   make example   installs what is missing, then runs the example project
#   make test      installs what is missing, then runs the test suite
# Both may be run again; they only install what is not there yet.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEBS   := dnsmasq-base libmail-dkim-perl opendkim opendkim-tools tmux

.PHONY: setup venv debs example test bench bench-hostile bench-memory fuzz clean

setup: debs venv

# The independent DKIM peers and the DNS server the tests talk to; tmux shows the monitor to its test.
debs:
	@if ! PATH="$$PATH:/usr/sbin:/sbin" command -v dnsmasq >/dev/null 2>&1 \
	    || ! test -x /usr/sbin/opendkim \
	    || ! command -v tmux >/dev/null 2>&1 \
	    || ! perl -MMail::DKIM::Verifier -e1 >/dev/null 2>&1; then \
	  echo "installing Debian packages: $(DEBS)"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEBS); \
	fi

venv: $(BIN)/salmon-dkim

$(BIN)/salmon-dkim: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

example: setup
	cd example_project && ../$(BIN)/python run.py

# two test processes (pytest-xdist); JOBS=1 runs them in one
JOBS ?= 2

test: setup
	$(BIN)/python -m pytest -q -n $(JOBS) $(PYTEST_ARGS)

bench: venv
	$(BIN)/python bench/sign.py
	$(BIN)/python bench/verify.py
	$(BIN)/python bench/canon.py
	$(BIN)/python bench/hostile.py
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/e2e.py

# Hostile message shapes: ms per MiB next to sha256, at two sizes (issue 8: at most 50x, linear).
bench-hostile: venv
	$(BIN)/python bench/hostile.py

# Extra peak memory of verifying and signing a 30 MiB message, and what stays held afterwards.
bench-memory: venv
	$(BIN)/python bench/memory.py

# The fuzz campaign (not part of make test): FUZZ_INPUTS mutated messages through every reader.
FUZZ_INPUTS ?= 100000
fuzz: venv
	$(BIN)/python bench/fuzz.py --inputs $(FUZZ_INPUTS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
