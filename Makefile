# The README's two commands: `make demo` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test clean-demo

setup: $(STAMP)

# Re-installs only when the dependency list or the pinned versions change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

test: setup
	$(PY) -m pytest -q

# Builds the built-in data if missing, trains the default text-to-image config on a CPU
# budget (or continues/reuses runs/t2i_shapes), writes samples/demo/grid.png and prints the
# attribute accuracy and diversity it measured. train.mixed_precision in the config decides
# the precision (auto = bf16 on CPU); accelerate's own flag is set only to silence its warning.
BIN := $(VENV)/bin
# accelerate launch pins a CPU process to ONE thread unless told otherwise.
NPROC := $(shell nproc 2>/dev/null || echo 2)
demo: setup
	$(BIN)/gan data shapes --out datasets/shapes --train 20000 --test 2000 --size 32 --seed 0 --if-missing
	$(BIN)/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
		--num_cpu_threads_per_process $(NPROC) train_gan.py --config configs/t2i_shapes.toml --resume auto
	$(BIN)/gan sample --checkpoint runs/t2i_shapes --prompt-file configs/t2i_shapes_prompts.txt \
		--num 8 --out samples/demo
	$(BIN)/gan eval --protocol evaluate/t2i_shapes.toml --checkpoint runs/t2i_shapes --out samples/demo/eval.json
