"""`--task images` derivations for any data (docs/runtime.md §5.5): the derived CNN host is valid
for every resolution and ends at a small map, and the stratified held-out split keeps every class
in training, holds out about a tenth of each, and depends on the data seed alone."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from esper.core.tasks import MAX_BLOCKS, MIN_BLOCKS, cnn_blocks
from esper.shell.data.images_task import stratified_heldout
from esper.shell.nets.hosts import CNNHostConfig


@given(st.integers(1, 4096), st.integers(1, 4096), st.sampled_from([1, 3]))
def test_the_derived_cnn_host_fits_every_resolution(height, width, channels):
    blocks, pools = cnn_blocks(height, width)
    assert MIN_BLOCKS <= blocks <= MAX_BLOCKS and 0 <= pools <= blocks
    config = CNNHostConfig(input_shape=(channels, height, width), n_classes=2, n_blocks=blocks, width=8,
                           pool_layers=pools)  # validates: no pool shrinks the map to nothing
    final = min(config.spatial(blocks - 1))
    assert final >= 1 and (final <= 7 or blocks == MAX_BLOCKS)


@given(st.lists(st.integers(1, 60), min_size=2, max_size=6), st.integers(0, 2**31 - 1))
def test_the_stratified_split_keeps_every_class_and_holds_out_a_tenth(sizes, seed):
    labels = np.random.default_rng(seed).permutation(np.repeat(np.arange(len(sizes)), sizes))
    held = stratified_heldout(labels, len(sizes), data_seed=seed)
    assert np.array_equal(held, stratified_heldout(labels, len(sizes), data_seed=seed))
    assert np.all(np.diff(held) > 0)
    counts = np.bincount(labels[held], minlength=len(sizes))
    for n, taken in zip(sizes, counts, strict=True):
        assert taken == (0 if n == 1 else min(max(1, round(0.1 * n)), n - 1))
