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

# Mutation testing of the core (mutmut; not in `make test`): one mutmut run over every mutant of the nine modules
# (pyproject's [tool.mutmut]), cheapest first. A judged mutant keeps its verdict, so a run cut short resumes where it
# stopped (`rm -rf mutants` starts over); MUTANTS="name-or-glob ..." re-judges those (after adding tests, say).
# mutants/wall-s adds up every run's wall time. The per-module table: benchmarks/results/mutation-<date>.{json,md}.
MUTATE_JOBS ?= 2
MUTANTS ?=
mutate: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[mutate]"
	mkdir -p mutants
	start=$$(date +%s); echo "mutmut run (log: mutants/run.log)"; \
	HYPOTHESIS_PROFILE=ci OMP_NUM_THREADS=1 $(BIN)/mutmut run --max-children $(MUTATE_JOBS) $(MUTANTS) \
	  > mutants/run.log 2>&1; code=$$?; \
	echo $$(( $$(cat mutants/wall-s 2>/dev/null || echo 0) + $$(date +%s) - start )) > mutants/wall-s; \
	[ $$code -eq 0 ] || { tail -c 2000 mutants/run.log; exit $$code; }; \
	$(BIN)/python benchmarks/mutation_summary.py --diffs --wall-s $$(cat mutants/wall-s)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache mutants
