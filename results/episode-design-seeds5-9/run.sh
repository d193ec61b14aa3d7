#!/bin/sh
# Issue 21's episode design (the episode a PPO policy is trained on): does growth change the outcome here?
# Fashion-MNIST (Debian's dataset-fashion-mnist), a 4,000-image training subset, 2,000 held-out images,
# 30-epoch runs; static vs heuristic beside the param- and FLOP-matched static baselines, seeds 5-9.
# The two design folders (seeds 0-4, seeds 5-9) together: heuristic 81.20 ± 1.07 % vs static 79.87 ± 1.01 %
# over 10 seeds (+1.33 points, Welch p = 0.011) at 1.34x static's training FLOPs; the param-matched host
# gains as much (+1.39) at 2.6x the FLOPs; the FLOP-matched one gains nothing (-0.28, p = 0.68).
# Seeds 100 and up are kept for judging a trained policy. CPU, about 25 minutes on 2 idle cores.
set -e
cd "$(dirname "$0")"
rm -rf compare
esper-run compare --task fashion-mnist --train-size 4000 --val-size 2000 --epochs 30 --controllers heuristic \
    --seeds 5 --first-seed 5 --device cpu --no-progress --telemetry-level minimal --out compare
