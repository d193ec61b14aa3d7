#!/bin/sh
# The synth-images row of the README's results table: heuristic vs static over seeds 0 1 2, beside
# the param-matched and FLOP-matched static baselines (RUNTIME.md §9). CPU, about 20 minutes.
set -e
cd "$(dirname "$0")"
rm -rf compare
esper-run compare --task synth-images --controllers heuristic --seeds 3 --device cpu --no-progress --out compare
