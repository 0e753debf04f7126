# raftkv — every entry point a newcomer or CI needs. Everything installs into .venv from pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SIM_SEEDS ?= 1..300
SIM_LONG_SEEDS ?= 1..10000


.PHONY: setup demo sim-demo test test-tools compat-clients test-slow fuzz lint typecheck unit sim-sweep sim-long bench bench-core bench-wal bench-cluster bench-membership bench-mvcc bench-coordination bench-trace bench-check bench-snapshot bench-compare torture clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## The main job: a local 3-node cluster of real processes: replicate, kill -9 the leader, fail over, catch up.
demo: setup
	$(PY) -m raftkv.demo

## The simulator's view of the same: a simulated 3-node cluster under faults, with a summary of the run.
sim-demo: setup
	$(PY) -m raftkv.sim --seed 1 --nodes 3 --verbose-summary

## Everything CI runs: lint, strict typing of the pure packages, unit + scenario tests, a simulator sweep.
test: setup test-tools compat-clients lint typecheck unit sim-sweep

## The real etcdctl for the etcd gateway's tests (Debian's etcd-client) and a Chromium for the dashboard's
## (Debian's chromium), installed when absent and possible; without them those tests skip and say why.
test-tools:
	@command -v etcdctl >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		timeout 180 apt-get install -y -q etcd-client >/dev/null 2>&1; } || \
		echo "etcdctl is not installed and could not be: the etcd gateway's etcdctl tests will skip"
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		timeout 600 apt-get install -y -q chromium >/dev/null 2>&1; } || \
		echo "chromium is not installed and could not be: the dashboard's browser test will skip"

## The etcd client libraries the gateway's tests run unchanged (python-etcd3, aetcd), in a virtualenv of their
## own (their generated etcdserverpb code cannot share a process, or a protobuf runtime setting, with ours);
## built when absent and possible, else those tests skip and say why.
COMPAT_VENV := .venv-compat
compat-clients: $(COMPAT_VENV)/.installed-stamp

$(COMPAT_VENV)/.installed-stamp: tests/etcdgw/compat/requirements.txt
	@{ $(PYTHON) -m venv $(COMPAT_VENV) && \
		timeout 300 $(COMPAT_VENV)/bin/pip install --quiet -r tests/etcdgw/compat/requirements.txt >/dev/null 2>&1 && \
		touch $@; } || \
		{ rm -rf $(COMPAT_VENV); echo "the etcd client libraries could not be installed: their gateway tests will skip"; }

lint: setup
	$(PY) -m ruff check src tests bench examples
	$(PY) -m ruff format --check src tests bench examples

typecheck: setup
	$(PY) -m mypy

unit: setup
	$(PY) -m pytest

sim-sweep: setup
	$(PY) -m raftkv.sim --seeds $(SIM_SEEDS) --jobs 2

## The long run (not in CI): 10,000+ random seeds.
sim-long: setup
	$(PY) -m raftkv.sim --seeds $(SIM_LONG_SEEDS) --jobs 2

## Tests marked slow (e.g. the 3,000-round WAL crash test); not part of `make test`.
test-slow: setup
	$(PY) -m pytest -m slow

## Property-based fuzzing of every decoder that reads outside bytes (tests/fuzz): CI runs 150 examples per
## property; this runs FUZZ_EXAMPLES (default 20,000; ~6 min here).
FUZZ_EXAMPLES ?= 20000
fuzz: setup
	RAFTKV_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q tests/fuzz

## The long torture runs (not in CI; ~32 min): real processes, every fault kind, histories checked.
## Six 300 s runs alternating 3 and 5 nodes; TORTURE_SEEDS / TORTURE_DURATION / TORTURE_FAULTS override.
TORTURE_SEEDS ?= 101..106
TORTURE_DURATION ?= 300
TORTURE_FAULTS ?= all
torture: setup
	$(PY) -m tests.e2e.torture --seeds $(TORTURE_SEEDS) --nodes 3,5 --duration $(TORTURE_DURATION) --faults $(TORTURE_FAULTS)

## Benchmarks: each prints its figures (recorded in docs/benchmarks.md).
bench: bench-core bench-wal bench-cluster bench-membership bench-check

bench-core: setup
	$(PY) bench/core_throughput.py

bench-wal: setup
	$(PY) bench/wal.py

bench-cluster: setup
	PYTHONPATH=. $(PY) bench/cluster.py

## Write stalls during membership changes, and leadership transfer times (bench/membership.py).
bench-membership: setup
	PYTHONPATH=. $(PY) bench/membership.py

bench-mvcc: setup
	PYTHONPATH=. $(PY) bench/mvcc.py

bench-coordination: setup
	PYTHONPATH=. $(PY) bench/coordination.py

bench-trace: setup
	PYTHONPATH=. $(PY) bench/trace_put.py

bench-check: setup
	$(PY) bench/check.py

## Snapshot cost, the write dip while one is taken, restart time with 1M keys (~10 min).
bench-snapshot: setup
	PYTHONPATH=. $(PY) bench/snapshot.py

## raftkv vs etcd (installed with apt-get if missing) vs PySyncObj, side by side (~8 min); see docs/compare.md.
bench-compare: setup
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	PYTHONPATH=. $(PY) bench/compare.py

clean:
	rm -rf $(VENV) $(COMPAT_VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
