"""A MorphogeneticModel on a user's nn.Sequential MLP (docs/lifecycle.md §7.4, §8): seeds grow in its
slots through the lifecycle, and the trainer's epoch and the counterfactual variants run on it."""

import torch
from seedbed_drive import PATIENT, drive_to, loss_of, seeded, train_step
from torch import nn

from esper.core.stages import Stage
from esper.shell.epoch import train_epoch
from esper.shell.model import MorphogeneticModel
from esper.shell.nets.stack_host import host_from_stack
from esper.shell.optim_groups import param_groups, sync_optimizer


def _model() -> tuple[MorphogeneticModel, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 32), nn.BatchNorm1d(32), nn.ReLU(),
                        nn.Linear(32, 5))
    x = torch.randn(8, 12, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 5, (8,), generator=torch.Generator().manual_seed(2))
    host = host_from_stack(seq, {"early": 1, "late": 4}, sample=x)
    return MorphogeneticModel(host, run_seed=0, lifecycle=PATIENT), x, y


class ArrayData:
    """The calls `train_epoch` makes of its data, over in-memory tensors."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def train_batches(self, batch_size, generator, *, max_batches=None):
        order = torch.randperm(len(self.x), generator=generator)
        return (order[k * batch_size:(k + 1) * batch_size] for k in range(len(self.x) // batch_size))

    def batch(self, split, index):
        return self.x[index], self.y[index]

    def batches(self, split, indices):
        return (self.batch(split, index) for index in indices)

    def prepare_batch(self, x, train, generator=None):
        return x


def test_a_seed_grows_in_a_sequential_mlp_and_blends_with_alpha_between_0_and_1():
    model, x, y = _model()
    assert model.topology == "mlp" and model.catalogue.names == ("noop", "norm", "lora", "mlp")
    model.eval()
    bare = model(x)
    rules = model.rules()
    state = seeded(model, "late", "mlp")  # germinated, then TRAINING
    assert model.sync_to(state).added == ("late",)
    assert torch.equal(model(x), bare)  # α = 0: the host's output exactly
    state = drive_to(state, rules, "late", Stage.BLENDING)
    assert model.sync_to(state).restaged == ("late",)
    slot = model.slot("late")
    assert 0.0 < slot.alpha.item() < 1.0 and slot.n_params() == 8 * 32 * 32 + 7 * 32

    optimizer = torch.optim.SGD(param_groups(model, host_lr=0.1, seed_lr=0.1))
    train_step(model, optimizer, x, y)
    host_grads = [p.grad for p in model.host.parameters()]
    assert all(g is not None for g in host_grads)
    assert any(bool(p.grad.ne(0).any()) for p in slot.module.parameters())
    model.eval()
    assert not torch.equal(model(x), bare)  # the seed (and host) learned, and the seed is blended in


def test_the_trainer_epoch_and_the_variants_run_on_a_stack_host():
    model, x, y = _model()
    state = seeded(model, "early", "lora")
    model.sync_to(drive_to(state, model.rules(), "early", Stage.BLENDING))
    optimizer = torch.optim.SGD(param_groups(model, host_lr=0.05, seed_lr=0.05))
    sync_optimizer(optimizer, model)
    gen = torch.Generator().manual_seed(3)
    sums = train_epoch(model, optimizer, ArrayData(x, y), batch_size=4, data_gen=gen, augment_gen=gen,
                       measured=("early",))
    assert sums.batches == 2 and sums.count.item() == 8
    assert sums.host_sq.item() > 0 and sums.seed_sq["early"].item() > 0
    model.eval()
    variants = [{}, {"early": 0.0}, {"early": 1.0}]
    stacked = model.forward_variants(x, variants)
    for v, variant in enumerate(variants):
        assert torch.equal(stacked[v], model(x, variant))
    assert loss_of(stacked[0], y).isfinite()
    assert model.structure_key() == (("lora", False, False), (None, False, False))
