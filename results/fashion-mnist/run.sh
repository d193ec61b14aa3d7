#!/bin/sh
# The Fashion-MNIST row of the README's results table: heuristic vs static over seeds 0 1 2, beside the
# param-matched and FLOP-matched static baselines. Real IDX files (Debian's dataset-fashion-mnist), the
# full 10,000-image test split, a 20,000-image training subset. CPU, about 30 minutes on 2 idle cores.
set -e
cd "$(dirname "$0")"
rm -rf compare
esper-run compare --task fashion-mnist --train-size 20000 --controllers heuristic --seeds 3 --device cpu \
    --no-progress --telemetry-level minimal --out compare
