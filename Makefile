# zh-pretrain: every target depends on `setup`, which builds .venv once.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
export TORCH_EXTENSIONS_DIR := $(abspath $(VENV))/torch_extensions
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

# make pretrain
MODEL ?=
SIZE ?= tiny
STEPS ?=
ZERO ?=
NPROC ?= 1
RUN ?=
CORPUS ?=
SAVE_EVERY ?=
LOG_EVERY ?=
# extra key=value config overrides, e.g. ARGS='train.lr=5e-4 data.clean_dir=/tmp/clean'
ARGS ?=
# make slurm (empty = the defaults of python -m pretrain.slurm: 1 node, CPU profile)
NODES ?=
GPUS_PER_NODE ?=
PARTITION ?=
TIME ?=
DRY_RUN ?=
export NODES GPUS_PER_NODE PARTITION TIME DRY_RUN
# make data / make tokenizer
OUT ?=
RUNNER ?= direct
WORKERS ?= 1
RUNNER_ARGS ?=
DATA ?= data/clean
VOCAB_SIZE ?= 50000
ALGO ?= wordpiece

RUNNER_CLASS = $(if $(filter direct,$(RUNNER)),DirectRunner,$(if $(filter flink,$(RUNNER)),FlinkRunner,$(if $(filter spark,$(RUNNER)),SparkRunner,$(if $(filter dataflow,$(RUNNER)),DataflowRunner,$(RUNNER)))))

.PHONY: setup test data tokenizer pretrain release eval slurm bench clean

setup: $(STAMP)

# Idempotent: the stamp is newer than pyproject.toml after one successful run.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	@echo "prebuilding DeepSpeed's CPU communication op into $(TORCH_EXTENSIONS_DIR)"
	$(PY) -c "from deepspeed.accelerator import get_accelerator as g; b = g().create_op_builder('ShareMemCommBuilder'); b is not None and b.is_compatible() and b.load()" 2>&1 | grep -v -i warn || true
	@touch $@

test: setup
	$(PY) -m pytest -q tests

data: setup
	@test -n "$(CORPUS)" || { echo "error: CORPUS is required, e.g. make data CORPUS='data/sample/*.jsonl' OUT=data/clean" >&2; exit 2; }
	$(PY) -m pipeline --input '$(CORPUS)' --output $(or $(OUT),data/clean) --runner $(RUNNER_CLASS) --workers $(WORKERS) $(RUNNER_ARGS)

tokenizer: setup
	$(PY) -m tokenizer --data $(DATA) --out $(or $(OUT),artifacts/tokenizer) --vocab-size $(VOCAB_SIZE) --algo $(ALGO)

pretrain: setup
	@test -n "$(MODEL)" || { echo "error: MODEL is required (valid: t5-pegasus|electra|mlm-proposal|roformer-sim)" >&2; exit 2; }
	@$(PY) -m pretrain.launch --model '$(MODEL)' --size '$(SIZE)' --nproc $(NPROC) --workers $(WORKERS) \
		$(if $(STEPS),--steps $(STEPS)) $(if $(ZERO),--zero $(ZERO)) $(if $(RUN),--run '$(RUN)') \
		$(if $(CORPUS),--corpus '$(CORPUS)') $(if $(SAVE_EVERY),--save-every $(SAVE_EVERY)) \
		$(if $(LOG_EVERY),--log-every $(LOG_EVERY)) $(ARGS)

# make release / make slurm read user values from the environment ("$$VAR"), never pasted
# into the recipe, so a value cannot inject shell; ARGS is only word-split (no globbing).
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

clean:
	rm -rf runs artifacts data/clean data/pairs
