# Two commands on a fresh machine with Python 3: `make run` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WORKDIR ?= workdir
PYTEST_ARGS ?=

.PHONY: run test bench bench-peers bench-peers-tunix clean

# `make run` installs what hh_jax needs (requirements.txt); `make test` adds the test tools
# (requirements-dev.txt: pytest, libtpu for the TPU compile tests, torch/transformers for the
# interop tests), which the main job neither needs nor should wait for.
$(VENV)/.installed-run: requirements.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

# The main job on the built-in default: the whole recipe at the tiny rung on the synthetic task
# (LM -> PMP -> PM -> rejection sampling -> distillation -> PPO -> online iterations -> report).
run: $(VENV)/.installed-run
	$(BIN)/python -m hh_jax.main --config=configs/pipeline.py:tiny --workdir=$(WORKDIR)/pipeline

# --capture=sys leaves C++ output (XLA's own fatal lines) on the terminal while Python's stays
# captured. A test whose xdist worker process dies (twice in CI: SIGABRT inside an 8-device
# step; not reproduced here, cold cache or under load) is run once more and listed under
# "rerun test summary info"; an ordinary failure is never rerun.
test: $(VENV)/.installed
	$(BIN)/python -m pytest -q -n 2 --durations=15 --capture=sys -rR \
	  --reruns 1 --only-rerun "crashed while running" $(PYTEST_ARGS)

# The PyTorch peer lives in its own environment; hh_jax never imports it.
bench-peers: bench/peers/.venv/.installed
bench/peers/.venv/.installed: bench/peers/requirements.txt
	$(PY) -m venv bench/peers/.venv
	bench/peers/.venv/bin/pip install -q -r bench/peers/requirements.txt
	touch $@

# The Google Tunix peer (same jax/jaxlib as .venv), in its own environment too.
bench-peers-tunix: bench/peers/.venv-tunix/.installed
bench/peers/.venv-tunix/.installed: bench/peers/requirements-tunix.txt
	$(PY) -m venv bench/peers/.venv-tunix
	bench/peers/.venv-tunix/bin/pip install -q -r bench/peers/requirements-tunix.txt
	touch $@

bench: $(VENV)/.installed
	$(BIN)/python bench/lm_step.py

clean:
	rm -rf $(WORKDIR)
