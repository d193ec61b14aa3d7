"""Data-parallel growth (docs/runtime.md §11.1): two gloo ranks train one model on shards of every batch,
see the same measurements, make every decision alike and end with bitwise equal weights; one rank's
arithmetic is today's. Every group runs under a timeout (esper.testing.ranks)."""

import copy

import attrs
import pytest
import torch
from torch import nn

from esper.core.config import LifecycleConfig
from esper.core.errors import ConfigError
from esper.core.stages import Stage
from esper.shell.data_parallel import Replicas, local_mean_divisor, rank_stream_seed, shard_rows, shard_slice
from esper.shell.dist import Ranks, process_group, tensor_digest
from esper.shell.driver import load_data
from esper.shell.run_config import RunConfig
from esper.shell.trainer import Trainer
from esper.testing.ranks import run_ranks

EPOCHS = 7


@pytest.mark.parametrize("n, world", [(8, 2), (5, 2), (7, 3)])
def test_shards_of_a_batch_and_of_a_heldout_chunk_cover_it_once_in_rank_order(n, world):
    index = torch.arange(10, 10 + n)
    rows = [shard_rows(index, Ranks(rank=r, world=world)) for r in range(world)]
    assert torch.equal(torch.cat(rows), index)
    parts = [shard_slice(slice(3, 3 + n), Ranks(rank=r, world=world)) for r in range(world)]
    assert [i for p in parts for i in range(p.start, p.stop)] == list(range(3, 3 + n))
    assert shard_rows(index, Ranks()) is index and shard_slice(slice(3, 9), Ranks()) == slice(3, 9)


def test_one_rank_divides_by_its_own_count_and_draws_today_s_streams():
    assert local_mean_divisor(64, 64, 64, Ranks()) == 64.0
    assert local_mean_divisor(3 * 16, 3, 5, Ranks(rank=1, world=2)) == 5 * 16 / 2  # text: 16 targets a row
    gen = torch.Generator().manual_seed(7)
    Replicas(Ranks(), 1).reseed({1: gen}, seed=0, epoch=3)
    assert torch.equal(gen.get_state(), torch.Generator().manual_seed(7).get_state())
    assert len({rank_stream_seed(0, 1, e, r) for e in (0, 1) for r in (0, 1)}) == 4


def test_a_batch_smaller_than_the_world_is_refused():
    with pytest.raises(ConfigError, match="batch size 1 is below the 2 ranks"):
        Replicas(Ranks(rank=0, world=2), 1)


def _uneven_gradient() -> list[tuple[list[float], list[float]]]:
    """Five rows over two ranks (2 and 3): DDP's averaged gradient is the five rows' mean gradient, before
    and after the model gains a parameter (a new wrapper; the old one's hooks must not act any more)."""
    with process_group(timeout_s=60) as ranks:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 1))
        x, y = torch.randn(5, 3), torch.randn(5, 1)
        index = torch.arange(5)
        rows = shard_rows(index, ranks)
        replicas, out = Replicas(ranks, 5), []
        for _ in range(2):
            model.zero_grad()
            net = replicas.forward_module(model)
            loss_sum = ((net(x[rows]) - y[rows]) ** 2).sum()
            (loss_sum / local_mean_divisor(len(rows), len(rows), len(index), ranks)).backward()
            reference = copy.deepcopy(model)
            reference.zero_grad()
            ((reference(x) - y) ** 2).mean().backward()
            out.append((model[0].weight.grad.flatten().tolist(), reference[0].weight.grad.flatten().tolist()))
            model.append(nn.Linear(1, 1))  # a structure change, as a germination
        return out


def test_uneven_shards_average_to_the_global_batch_mean_gradient():
    for rank in run_ranks(_uneven_gradient, world=2, timeout_s=120):
        for got, expected in rank:
            assert got == pytest.approx(expected, abs=1e-6)


def growth_trainer(cfg: RunConfig, ranks: Ranks | None = None) -> Trainer:
    """The real heuristic with thresholds low enough that a seed germinates at epoch 1 and fossilizes
    within 7 tiny epochs (synth-images, 256 samples: too few to learn, so the gain gates would cull it)."""
    lifecycle = LifecycleConfig.for_horizon(cfg.epochs, min_training_epochs=1, min_training_improvement=-1.0,
                                            min_blending_epochs=1, min_fossilize_contribution=0.0,
                                            tempo_choices=(1, 2, 3), default_tempo=2)
    trainer = Trainer(cfg, load_data(cfg, torch.device("cpu")), torch.device("cpu"), lifecycle_config=lifecycle,
                      ranks=ranks)
    trainer.heuristic_cfg = attrs.evolve(trainer.heuristic_cfg, blend_hurts=-1.0, shadow_hurts=-1.0,
                                         min_total_gain=-1.0)
    return trainer


GROWTH = RunConfig(seed=0, epochs=EPOCHS, train_size=256, val_size=128, batch_size=64, germination="early",
                   min_germinate_epoch=1)


def _grow() -> tuple[list[tuple[str, str]], list[str], str, float]:
    """(decisions, stages, weights digest, final val acc) of a growth run on this process's ranks."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with process_group(timeout_s=120) as ranks:
        trainer = growth_trainer(GROWTH, ranks)
        decisions = [(str(r.action), r.reason) for r in (trainer.run_epoch() for _ in range(EPOCHS))]
        stages = [s.stage.name for s in trainer.state.slots if s.seed is not None]
        state = [t.reshape(-1) for t in (*trainer.model.parameters(), *trainer.model.buffers())]  # 0-dim too
        torch.set_num_threads(threads)
        return decisions, stages, tensor_digest(state), trainer.history[-1][1]


def test_two_ranks_germinate_and_fossilize_alike_and_end_with_bitwise_equal_weights():
    (decisions, stages, weights, acc), other = run_ranks(_grow, world=2, timeout_s=300)
    assert (decisions, stages, weights, acc) == other
    assert any(a.startswith("GERMINATE") for a, _ in decisions) and any(a.startswith("FOSSILIZE") for a, _ in decisions)
    assert Stage.FOSSILIZED.name in stages
    one_decisions, _, _, one_acc = _grow()  # the one-rank run (no launcher environment here): other streams
    assert any(a.startswith("FOSSILIZE") for a, _ in one_decisions)
    print(f"final val acc: 2 ranks {acc:.4f}, 1 rank {one_acc:.4f}; 1-rank decisions {one_decisions}")


def _one_rank_measures_otherwise(out: str) -> str:
    """A 2-epoch run through the driver whose rank 1 records a different val accuracy: the line it stops with."""
    from unittest import mock

    from esper.shell.dist import RanksDiverged, ranks_from_env
    from esper.shell.driver import train
    from esper.shell.epoch_numbers import EpochNumbers

    measurements = EpochNumbers.measurements

    def shifted(numbers: EpochNumbers, epoch: int):
        m = measurements(numbers, epoch)
        return attrs.evolve(m, val_acc=m.val_acc + 0.5)

    cfg = RunConfig(epochs=2, train_size=128, val_size=64, batch_size=64, progress=False, report=False)
    with mock.patch.object(EpochNumbers, "measurements", shifted if ranks_from_env().rank == 1 else measurements):
        try:
            train(cfg, out=out)
        except RanksDiverged as exc:
            return str(exc)
    return "no divergence"


def test_a_rank_that_measures_otherwise_stops_every_rank_with_one_line(tmp_path):
    lines = run_ranks(_one_rank_measures_otherwise, world=2, timeout_s=240, args=(str(tmp_path / "run"),))
    assert lines[0] == lines[1]
    assert lines[0].startswith("ranks diverged at epochs 1: rank 1 differs from rank 0 (digest ")
    assert "\n" not in lines[0]
    summary = (tmp_path / "run" / "summary.json").read_text()
    assert '"status": "aborted"' in summary
