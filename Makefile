# loas: every target depends on the venv, so `make sim-rtl LAYER=conv3` and `make test`
# do all the set-up on a fresh machine.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
LAYER   ?= conv3
WORKLOAD ?= default
SIM     ?= verilator
WAVES   ?= 0
JOBS    ?= 2
SAMPLES ?=
COUNT   ?= 200
SEED    ?= 0

.PHONY: install test test-fast sim-rtl regress verilog synth bench traces clean distclean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -r requirements.txt
	$(VPY) -m pip install -q --no-deps spikingjelly==2.0.0
	$(VPY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: $(STAMP)
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 $(VPY) -m pytest -n $(JOBS) tests

test-fast: $(STAMP)
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 $(VPY) -m pytest -n $(JOBS) -m "not rtl and not slow" tests

# LAYER=all runs every layer and (unless SAMPLES says how many) every sample; TARGET=accel runs the
# whole accelerator (DRAM port, fetch unit, tiles, output writer) instead of the core.
sim-rtl: $(STAMP)
	$(VENV)/bin/loas rtl sim $(WORKLOAD) --layer $(LAYER) --simulator $(SIM) $(if $(TARGET),--target $(TARGET)) \
	  $(if $(filter 1,$(WAVES)),--waves) \
	  $(if $(SCHEDULE),--schedule $(SCHEDULE)) $(if $(SAMPLES),--samples $(SAMPLES),$(if $(filter all,$(LAYER)),--samples all))

regress: $(STAMP)
	$(VENV)/bin/loas rtl regress --count $(COUNT) --seed $(SEED) --simulator $(SIM)

verilog: $(STAMP)
	$(VENV)/bin/loas rtl verilog --out build/verilog

synth: $(STAMP)
	$(VENV)/bin/loas rtl synth --out build/synth --results bench/results

bench: $(STAMP)
	$(VPY) bench/run.py

traces: $(STAMP)
	$(VENV)/bin/loas export --checkpoint models/checkpoints/default.pt --out traces/default --force

clean:
	rm -rf build sim_build .pytest_cache .hypothesis
	find . -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
