# zh-pretrain: every target depends on `setup`, which builds .venv once.
#
# User values (MODEL, RUN, CORPUS, ARGS, ...) reach the commands only through the environment
# ("$$VAR" in the recipes, never pasted into a shell line), so no value can inject a command;
# ARGS-like lists are word-split with globbing off (set -f).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
export TORCH_EXTENSIONS_DIR := $(abspath $(VENV))/torch_extensions
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

# make pretrain (empty = the launcher's defaults: SIZE=tiny, NPROC=1, RUN=runs/MODEL, the YAML's corpus)
MODEL ?=
SIZE ?=
STEPS ?=
ZERO ?=
NPROC ?=
RUN ?=
CORPUS ?=
SAVE_EVERY ?=
LOG_EVERY ?=
# start from an existing Hugging Face folder; VOCAB=keep keeps its tokenizer (default: project vocabulary)
INIT ?=
VOCAB ?=
# extra key=value config overrides, e.g. ARGS='train.lr=5e-4 data.valid_fraction=0.05'
ARGS ?=
# make slurm (empty = the defaults of python -m pretrain.slurm: 1 node, CPU profile)
NODES ?=
GPUS_PER_NODE ?=
PARTITION ?=
TIME ?=
DRY_RUN ?=
# make data / make tokenizer
OUT ?=
RUNNER ?= direct
WORKERS ?= 1
RUNNER_ARGS ?=
TEXT_FIELD ?=
FORMAT ?=
ENCODING ?=
DATA ?= data/clean
VOCAB_SIZE ?= 50000
ALGO ?= wordpiece
export MODEL SIZE STEPS ZERO NPROC RUN CORPUS SAVE_EVERY LOG_EVERY ARGS INIT VOCAB NODES GPUS_PER_NODE PARTITION TIME DRY_RUN \
       OUT RUNNER WORKERS RUNNER_ARGS TEXT_FIELD FORMAT ENCODING DATA VOCAB_SIZE ALGO

.PHONY: setup test test-fast data tokenizer pretrain release eval slurm bench clean

setup: $(STAMP)

# Idempotent: the stamp is newer than pyproject.toml after one successful run.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,dask]'
	@echo "prebuilding DeepSpeed's CPU communication op into $(TORCH_EXTENSIONS_DIR)"
	$(PY) -c "from deepspeed.accelerator import get_accelerator as g; b = g().create_op_builder('ShareMemCommBuilder'); b is not None and b.is_compatible() and b.load()" 2>&1 | grep -v -i warn || true
	@touch $@

test: setup
	$(PY) -m pytest -q --durations=25 tests

# The unit tier: no pipeline, trainer or cluster runs (under a minute on 2 cores).
test-fast: setup
	$(PY) -m pytest -q -m "not slow" tests

data: setup
	@test -n "$$CORPUS" || { echo "error: CORPUS is required, e.g. make data CORPUS='data/sample/*.jsonl' OUT=data/clean" >&2; exit 2; }
	@set -f; $(PY) -m pipeline --input "$$CORPUS" --output "$${OUT:-data/clean}" --runner "$$RUNNER" --workers "$$WORKERS" \
		$${TEXT_FIELD:+--text-field "$$TEXT_FIELD"} $${FORMAT:+--format "$$FORMAT"} $${ENCODING:+--encoding "$$ENCODING"} \
		$$(for kv in $$SET; do printf -- '--set %s ' "$$kv"; done) $$RUNNER_ARGS

tokenizer: setup
	@$(PY) -m tokenizer --data "$$DATA" --out "$${OUT:-artifacts/tokenizer}" --vocab-size "$$VOCAB_SIZE" --algo "$$ALGO"

pretrain: setup
	@set -f; $(PY) -m pretrain.launch --model "$$MODEL" --size "$$SIZE" --nproc "$${NPROC:-1}" --workers "$$WORKERS" \
		--steps "$$STEPS" --zero "$$ZERO" --run "$$RUN" --corpus "$$CORPUS" --save-every "$$SAVE_EVERY" \
		--log-every "$$LOG_EVERY" --text-field "$$TEXT_FIELD" --format "$$FORMAT" --encoding "$$ENCODING" \
		--init "$$INIT" --vocab "$$VOCAB" $$(for kv in $$SET; do printf -- '--set %s ' "$$kv"; done) $$ARGS

release: setup
	@set -f; $(PY) -m pretrain.release --model "$$MODEL" --run "$$RUN" $$ARGS

# make eval MODEL=electra RUN=runs/electra [ARGS='--seeds 0,1 -o steps=1000']: RUN/eval/<task>.json + a table.
eval: setup
	@set -f; $(PY) -m pretrain.evaluate --run "$${RUN:-runs/$$MODEL}" --model-name "$$MODEL" $$ARGS

slurm: setup
	@set -f; $(PY) -m pretrain.slurm --model "$$MODEL" --size "$$SIZE" --run "$$RUN" --nodes "$$NODES" \
		--gpus-per-node "$$GPUS_PER_NODE" --partition "$$PARTITION" --time "$$TIME" --dry-run-value "$$DRY_RUN" $$ARGS

# Each benchmark writes bench/results/<name>.json; its printed tables refresh BENCHMARKS.md.
bench: setup
	@set -o pipefail; for b in $(wildcard bench/*_bench.py bench/mask_variance.py); do \
		echo "== $$b"; $(PY) $$b | tee bench/results/$$(basename $$b .py).out || exit 1; done
	$(PY) bench/report.py

# Only what the project itself generates (stage folders, tokenizers, runs); never user folders.
clean:
	rm -rf runs artifacts data/stages data/clean data/pairs
