# Fresh machine:  make tiny   (every table and figure on the embedded benchmark)
#                 make test   (the test suite, real SLURM included)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
JOBS   ?= 2

.PHONY: setup system tiny smoke test clean-results

setup: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -r requirements.txt -c constraints.txt
	# torchaudio 2.11 ships CUDA-linked extensions; its pure-Python transforms (tests only) work without them
	rm -f $(VENV)/lib/python3*/site-packages/torchaudio/lib/*.so
	$(VENV)/bin/pip install -q --no-deps --no-build-isolation -e .
	touch $@

# Debian packages for the single-node SLURM that the tests start (needs root, like CI).
system:
	bash scripts/install-system.sh

tiny: setup
	PATH=$(abspath $(VENV))/bin:$$PATH snakemake --profile workflow/profiles/local --cores $(JOBS) all

smoke: setup
	PATH=$(abspath $(VENV))/bin:$$PATH snakemake --profile workflow/profiles/local --cores $(JOBS) --config scale=smoke -- all

test: setup system
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m pytest -q

clean-results:
	rm -rf results .snakemake
