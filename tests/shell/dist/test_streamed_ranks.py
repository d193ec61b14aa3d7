"""docs/runtime.md §5.7 with §11.1: on two gloo ranks, the streamed data path (each rank's loader reads
its shard of every batch) trains to the numbers and weights of the resident path on two ranks.
The ranks run in daemonic processes (esper.testing.ranks), which may not start DataLoader workers, so
the loaders read in the rank itself (`data_workers=0`); worker processes are tested on one rank."""

import attrs
import torch

from esper.shell.dist import process_group, tensor_digest
from esper.testing.ranks import run_ranks
from tests.shell.dist.test_data_parallel import GROWTH, growth_trainer


def _two_epochs(budget: int | None) -> tuple[str, list[tuple[float, ...]], list[str], str]:
    torch.set_num_threads(1)
    with process_group(timeout_s=120) as ranks:
        trainer = growth_trainer(attrs.evolve(GROWTH, epochs=3, data_budget=budget, data_workers=0), ranks)
        results = [trainer.run_epoch() for _ in range(3)]
        state = [t.reshape(-1) for t in (*trainer.model.parameters(), *trainer.model.buffers())]
        return (trainer.data.path, [(r.train_loss, r.train_acc, r.val_loss, r.val_acc) for r in results],
                [str(r.action) for r in results], tensor_digest(state))


def test_two_ranks_on_the_streamed_path_train_as_two_ranks_on_the_resident_path():
    resident = run_ranks(_two_epochs, world=2, timeout_s=300, args=(None,))
    streamed = run_ranks(_two_epochs, world=2, timeout_s=300, args=(0,))
    assert [r[0] for r in resident] == ["resident"] * 2 and [s[0] for s in streamed] == ["streamed"] * 2
    assert [r[1:] for r in resident] == [s[1:] for s in streamed]
    assert resident[0][1:] == resident[1][1:]  # every rank measured and decided alike
