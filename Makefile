# One-command set-up, tests, gates, parity, benchmarks and reports.
# Every target that needs the environment depends on $(VENV)/.ready, so a fresh clone
# needs nothing but `make test` (or `make gates`).
#
# The virtual environment lives at a stable path outside the clone, keyed by the Jittor
# pin and the Python version only: Jittor keys its compiled-kernel cache partly by the
# path of its installation, so a venv inside each clone (or one whose path moved with
# any other pin) would recompile every kernel (minutes). Other pins are installed into
# it whenever requirements.txt changes. `.venv/bin/` in the clone holds wrappers that run
# it by its real path (a symlinked venv would give Jittor another path, a cold cache).
SHELL := /bin/bash
PY ?= python3
JITTOR_KEY := $(shell cat <(grep '^jittor==' requirements.txt) <($(PY) --version 2>&1) | sha1sum | cut -c1-12)
VENV ?= $(HOME)/.cache/rtdetr/venv-$(JITTOR_KEY)
VPY := $(VENV)/bin/python
export HYPOTHESIS_PROFILE ?= ci
export PYTHONDONTWRITEBYTECODE := 1
export OMP_NUM_THREADS ?= 2
# Jittor steps stall for seconds with busy-waiting OpenMP threads on a shared 2-core machine
export OMP_WAIT_POLICY ?= PASSIVE
TIME = scripts/timed.sh

.PHONY: setup test parity gates bench report trained-fixture clean

setup: $(VENV)/.ready

# The Jittor twin's sources are prerequisites: a changed kernel is compiled here, not in a user's first run.
$(VENV)/.ready: requirements.txt scripts/setup_onednn.sh scripts/setup_mpi.sh scripts/warm_jittor_kernels.py \
		$(shell find rtdetr_jittor rtdetr_common -name '*.py')
	@$(TIME) "venv + pinned packages" bash -c '[ -x $(VPY) ] || $(PY) -m venv $(VENV); $(VPY) -m pip install -q -r requirements.txt'
	@$(TIME) "oneDNN for Jittor" bash scripts/setup_onednn.sh
	@$(TIME) "OpenMPI for data-parallel Jittor" bash scripts/setup_mpi.sh
	@$(TIME) "Jittor core compile" $(VPY) -m rtdetr_jittor._env
	@$(TIME) "Jittor kernels of the shipped configs" $(VPY) scripts/warm_jittor_kernels.py
	@bash scripts/venv_wrappers.sh $(VENV) .venv
	@touch $@

test: setup
	@$(TIME) "fast suite (incl. pytest -m parity and quick gates)" $(VPY) -m pytest -m "not slow" -q

parity: setup
	@$(TIME) "parity suite" $(VPY) -m pytest -m parity -q

gates: setup
	@$(TIME) "gates (pytest -m 'gate and slow')" bash -c '$(VPY) -m pytest -m "gate and slow" -q; rc=$$?; \
		cat reports/gates/summary.md 2>/dev/null; exit $$rc'

bench: setup
	@$(TIME) "benchmarks" $(VPY) -m bench.run

trained-fixture: setup
	@$(TIME) "trained weights (fixtures/trained/, cached in ~/.cache/rtdetr/trained/)" $(VPY) -m parity.trained

report: setup
	@$(TIME) "docs/RESULTS.md from the latest parity, gates and bench reports" $(VPY) scripts/render_results.py

clean:
	rm -rf reports .pytest_cache .hypothesis
