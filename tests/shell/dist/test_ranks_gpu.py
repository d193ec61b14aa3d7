"""Ranks on CUDA (docs/runtime.md §11, `-m gpu`): two ranks share the one GPU (gloo carries the CUDA
tensors: NCCL refuses two ranks on one device), reduce CUDA tensors, and grow one model data-parallel
with both ranks deciding alike and ending with bitwise equal weights."""

import pytest
import torch

from esper.shell.dist import bind_device, nccl_fits, process_group, tensor_digest
from esper.shell.driver import load_data
from esper.shell.run_config import RunConfig
from esper.shell.trainer import Trainer
from esper.testing.ranks import run_ranks

pytestmark = pytest.mark.gpu


def _cuda_collectives() -> tuple[str, float, bool]:
    with process_group(timeout_s=120) as ranks:
        device = bind_device(torch.device("cuda"), ranks)
        total = ranks.all_reduce_sum(torch.tensor([ranks.rank + 1.0], device=device))
        return str(total.device.type), total.item(), nccl_fits(ranks)


def test_two_ranks_reduce_cuda_tensors_on_the_gpus_there_are():
    results = run_ranks(_cuda_collectives, world=2, timeout_s=300)
    assert [r[:2] for r in results] == [("cuda", 3.0)] * 2
    assert results[0][2] == (torch.cuda.device_count() >= 2)


def _grow_on_cuda() -> tuple[list[str], str]:
    """A tiny heuristic run on cuda on this process's ranks: its decisions and a digest of its weights."""
    with process_group(timeout_s=120) as ranks:
        device = bind_device(torch.device("cuda"), ranks)
        cfg = RunConfig(seed=0, epochs=4, train_size=256, val_size=128, batch_size=64, germination="early",
                        min_germinate_epoch=1, device=str(device))
        trainer = Trainer(cfg, load_data(cfg, device), device, ranks=ranks)
        decisions = [str(trainer.run_epoch().action) for _ in range(cfg.epochs)]
        state = [t.reshape(-1) for t in (*trainer.model.parameters(), *trainer.model.buffers())]
        return decisions, tensor_digest(state)


def test_two_ranks_on_cuda_decide_alike_and_end_with_bitwise_equal_weights():
    first, second = run_ranks(_grow_on_cuda, world=2, timeout_s=600)
    assert first == second
