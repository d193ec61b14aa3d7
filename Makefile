# esper — the two set-up commands are `make run` and `make test`; both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-slow test-gpu lint bench bench-gpu mutate clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: this machine ships a CPU wheel; the project's range accepts it.
	$(BIN)/python -m pip install --quiet "torch==2.13.0" || $(BIN)/python -m pip install --quiet "torch>=2.5"
	$(BIN)/python -m pip install --quiet -e ".[dev,tensorboard,jax,wandb]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/esper-run train

lint: $(STAMP)
	$(BIN)/ruff check esper tests properties examples
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

test-gpu: $(STAMP)
	$(BIN)/python -m pytest -q -m gpu

bench: $(STAMP)
	@ls benchmarks/*.py >/dev/null 2>&1 || { echo "no benchmarks yet"; exit 0; }
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

# Everything a lent GPU should measure, in under 8 minutes: the gpu tests and every benchmark on CUDA, each
# with its own timeout; one JSON summary on stdout and in benchmarks/results/bench-gpu-<time>.json.
bench-gpu: $(STAMP)
	$(BIN)/python benchmarks/run_all.py --device cuda --budget-s 470

# Mutation testing of the core (mutmut; not in `make test`): each module's mutants in turn, in MUTATE_MODULES' order
# (a cut-short run has the first ones done), then the per-module table in benchmarks/results/mutation-<date>.{json,md}.
MUTATE_MODULES ?= lifecycle gates legality alpha rewards gae ppo blend running_stats
MUTATE_JOBS ?= 2
mutate: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[mutate]"
	mkdir -p mutants
	start=$$(date +%s); for m in $(MUTATE_MODULES); do \
	  echo "mutating esper/core/$$m.py (log: mutants/run-$$m.log)"; \
	  HYPOTHESIS_PROFILE=ci OMP_NUM_THREADS=1 $(BIN)/mutmut run --max-children $(MUTATE_JOBS) "esper.core.$$m.*" \
	    > mutants/run-$$m.log 2>&1 || { tail -n 20 mutants/run-$$m.log; exit 1; }; \
	done; $(BIN)/python benchmarks/mutation_summary.py --diffs --wall-s $$(( $$(date +%s) - start ))

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache mutants
