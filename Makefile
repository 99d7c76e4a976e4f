# padprep developer targets. `make demo` and `make test` work on a fresh machine (Python 3.11 + PyPI).
PYTHON_BOOT ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PADPREP := $(VENV)/bin/padprep
DEMO_OUT ?= out/demo

.PHONY: install install-test demo test test-fast lint bench bench-memory bench-resume bench-store bench-cluster sample-data clean

$(PY):
	$(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(PY) pyproject.toml scripts/install_torch.sh
	PYTHON=$(PY) bash scripts/install_torch.sh
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed tests/exports-requirements.txt
	$(PY) -m pip install --quiet -e '.[test,ray,exports]'
	$(PY) -m pip install --quiet --no-deps -r tests/exports-requirements.txt
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

## Build the bundled sample conversations into shards, then inspect and verify them.
demo: install
	$(PADPREP) build sample_data/chat.jsonl --tokenizer sample_data/tokenizer \
		--output $(DEMO_OUT) --overwrite
	$(PADPREP) inspect $(DEMO_OUT) --show 2 --verify

## Install the test dependencies (and Ray, for the --engine ray tests) and run the whole test suite.
test: install-test
	$(PY) -m pytest -q

## The unit tests that take under a few seconds each (under a minute in all): the loop while editing.
test-fast: install-test
	$(PY) -m pytest -q tests/unit -m "not slow and not ray"

## ruff: lint and format check over the package and the tests (configured in pyproject.toml).
lint: install-test
	$(VENV)/bin/ruff check padprep tests
	$(VENV)/bin/ruff format --check padprep tests

## padprep vs the datasets pipeline vs the raw encode_batch ceiling at 10k and 50k conversations (and Parquet
## against the same rows as JSON Lines), the 100-conversation start-up, then preference pairs against TRL's
## preparation, then each export format against the build it reads (200k conversations); one run (~25 min).
bench: install-test
	$(PY) benchmarks/run.py --sizes 10000,50000 --startup
	$(PY) benchmarks/pairs_bench.py --pairs 20000
	$(PY) benchmarks/export_bench.py --conversations 200000

## A 200k-conversation build killed at 60% and run again, against one never interrupted; what checkpoints cost.
bench-resume: install-test
	$(PY) benchmarks/resume_bench.py --conversations 200000

## The tokenized store: re-layouts (--seed, --pack, --buckets) from it and 20 inputs with 19 stored, against
## fresh builds, byte-compared; what filling the store costs a fresh build (20k conversations, ~6 min).
bench-store: install-test
	$(PY) benchmarks/store_bench.py --conversations 20000

## --engine ray on a 3-node Ray cluster on this machine (separate `ray start` processes, 1 CPU each) writing to a
## local S3 server (moto), against the local engine: wall time, the driver's and the largest Ray worker's peak RSS,
## bytes beside the output, shards byte-compared; 20k and 200k conversations (~15 min; the 2M check: --conversations 200000,2000000 --to local).
bench-cluster: install-test
	$(PY) benchmarks/cluster_bench.py --conversations 20000,200000 --json out/cluster_bench.json

## Peak memory at 20k and at 2M conversations (long: writes a 2.4 GB input).
bench-memory: install-test
	$(PY) benchmarks/run.py --memory

## Regenerate sample_data/ (tokenizers + conversations) from scripts/make_sample_data.py.
sample-data: install
	$(PY) scripts/make_sample_data.py

clean:
	rm -rf out .pytest_cache
