# Fresh machine:  make tiny   (every table and figure on the embedded benchmark)
#                 make test   (the test suite, real SLURM included)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
JOBS   ?= 2

.PHONY: setup setup-gpu check-env system tiny smoke test test-nosystem clean-results

setup: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -r requirements.txt -c constraints.txt
	# torchaudio 2.11 ships CUDA-linked extensions; its pure-Python transforms (tests only) work without them
	rm -f $(VENV)/lib/python3*/site-packages/torchaudio/lib/*.so
	$(VENV)/bin/pip install -q --no-deps --no-build-isolation -e .
	touch $@

# GPU machine (Linux x86_64 + NVIDIA driver): the same pins with torch's CUDA build from the package
# index (no local CPU wheel, no pytorch conda channel); see environment.yml for the conda route.
setup-gpu: requirements.txt pyproject.toml
	test -x $(PY) || python3.11 -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements.txt
	$(VENV)/bin/pip install -q --no-deps --no-build-isolation -e .
	$(PY) scripts/check_env.py --fix

check-env:
	$(PY) scripts/check_env.py

# Debian packages for the single-node SLURM that the tests start (needs root, like CI).
system:
	bash scripts/install-system.sh

tiny: setup
	PATH=$(abspath $(VENV))/bin:$$PATH snakemake --profile workflow/profiles/local --cores $(JOBS) all

smoke: setup
	PATH=$(abspath $(VENV))/bin:$$PATH snakemake --profile workflow/profiles/local --cores $(JOBS) --config scale=smoke -- all

# -n auto: one pytest worker per core (pytest-xdist); the tiny benchmark and pretraining are built once per run under a file lock, the test SLURM cluster once per worker (tests/conftest.py)
test: setup system
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m pytest -q -n auto

# Without root or apt: the SLURM tests skip (they say why), tests needing ../shared/testdata skip
# unless AVFUSION_TESTDATA points at the test media.
test-nosystem: setup
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m pytest -q -n auto

clean-results:
	rm -rf results .snakemake
