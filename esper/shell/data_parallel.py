"""Data-parallel growth (docs/runtime.md §11.1): W ranks train one morphogenetic model, each on a shard
of every batch, and every rank's pure lifecycle sees the same measurements, so every rank decides alike.

    batch     every rank draws the same permutation (the data stream) and trains on its contiguous
              shard of each global batch of B rows (B = the preset's batch size): rows [r·B/W, (r+1)·B/W)
    gradient  DDP averages the ranks' gradients; with L_r the rank's summed loss over its n_r targets
              and N = Σ_r n_r, each rank back-propagates L_r / (N / W), so
                  (1/W) Σ_r ∇(W · L_r / N) = ∇(Σ_r L_r) / N,
              the global batch's mean gradient, shards even or not
    sums      train loss/correct/count and the validation sums Σ over ranks on the device (one
              all-reduce each) before the epoch's one host fetch; the gradient-norm sums (grad_ratio's
              S terms) are taken on the averaged gradients, so they are equal on every rank already;
              BatchNorm running statistics are averaged over ranks after training (each rank saw its shard)
    streams   augmentation and dropout differ per rank (else every shard draws the same flips and masks):
              for W > 1 each is reseeded every epoch from (run seed, stream, epoch, rank), so a resume is
              exact from rank 0's checkpoint, which holds no other rank's generator state
    wrap      DDP is built over the model again whenever its trainable parameters change (a seed added or
              culled, a rollback or resume that rebuilt the model); every parameter of a slot with a module
              receives a gradient each step (TRAINING's straight-through included), so no
              `find_unused_parameters`. Its construction broadcasts rank 0's weights (equal anyway).

One rank: none of this happens (no wrapper, no collective, today's streams and arithmetic, bit for bit).
"""

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from esper.core.errors import ConfigError
from esper.shell.dist import Ranks


def shard_rows(index: Tensor, ranks: Ranks) -> Tensor:
    """This rank's contiguous rows of a global batch's index tensor (the whole batch for one rank)."""
    if not ranks.distributed:
        return index
    n, w, r = len(index), ranks.world, ranks.rank
    return index[r * n // w:(r + 1) * n // w]


def shard_slice(block: slice, ranks: Ranks) -> slice:
    """This rank's contiguous part of a held-out slice (the whole slice for one rank)."""
    n, w, r = block.stop - block.start, ranks.world, ranks.rank
    return slice(block.start + r * n // w, block.start + (r + 1) * n // w)


def local_mean_divisor(n_local: int, rows_local: int, rows_global: int, ranks: Ranks) -> float:
    """N / W: what this rank divides its summed loss by so DDP's average is the global batch's mean
    gradient (every row has the same number of targets, so N = n_r · rows_global / rows_r). One rank: n."""
    n_global = n_local * rows_global // rows_local
    return n_global / ranks.world


def all_reduce_sums(tensors: Sequence[Tensor], ranks: Ranks) -> list[Tensor]:
    """Σ over ranks of each tensor (same dtype and device), as one collective; unchanged for one rank."""
    if not ranks.distributed:
        return list(tensors)
    flat = ranks.all_reduce_sum(torch.cat([t.reshape(-1) for t in tensors]))
    return [piece.reshape(t.shape) for piece, t in zip(flat.split([t.numel() for t in tensors]), tensors, strict=True)]


def average_running_stats(model: nn.Module, ranks: Ranks) -> None:
    """Every BatchNorm's running mean and variance: the mean over ranks (one collective), equal everywhere."""
    if not ranks.distributed:
        return
    stats = [buf for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             for buf in (m.running_mean, m.running_var) if buf is not None]
    if not stats:
        return
    summed = all_reduce_sums([s.float() for s in stats], ranks)
    with torch.no_grad():
        for buf, total in zip(stats, summed, strict=True):
            buf.copy_(total / ranks.world)


def rank_stream_seed(seed: int, stream: int, epoch: int, rank: int) -> int:
    """The seed of a per-rank stream for one epoch: SeedSequence([seed, 0, stream, epoch, rank])."""
    return int(np.random.SeedSequence([seed, 0, stream, epoch, rank]).generate_state(1, np.uint64)[0])


class Replicas:
    """The ranks a Trainer trains on, and the DDP wrapper of its current model."""

    def __init__(self, ranks: Ranks, batch_size: int) -> None:
        if batch_size < ranks.world:
            raise ConfigError(f"batch size {batch_size} is below the {ranks.world} ranks: every rank needs "
                              "rows of every batch; raise --batch-size or lower --nproc")
        self.ranks = ranks
        self._wrapper: DistributedDataParallel | None = None
        self._key: tuple[tuple[int, bool], ...] = ()

    def forward_module(self, model: nn.Module) -> nn.Module:
        """What training calls: the model itself for one rank, else its DDP wrapper, rebuilt when the
        model or its trainable parameters changed since the last one."""
        if not self.ranks.distributed:
            return model
        # The old wrapper holds its parameters alive, so a new parameter cannot reuse an old one's id.
        key = tuple((id(p), p.requires_grad) for p in model.parameters())
        if self._wrapper is None or self._wrapper.module is not model or key != self._key:
            self._wrapper = None
            device = next(model.parameters()).device
            self._wrapper = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None,
                                                    forward_sync_buffers=False)
            self._key = key
        return self._wrapper

    def reseed(self, generators: dict[int, torch.Generator], seed: int, epoch: int) -> None:
        """For W > 1: each stream's generator reseeded for this epoch and rank (`rank_stream_seed`)."""
        if not self.ranks.distributed:
            return
        for stream, generator in generators.items():
            generator.manual_seed(rank_stream_seed(seed, stream, epoch, self.ranks.rank))
