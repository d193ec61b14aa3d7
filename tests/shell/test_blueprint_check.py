"""Your own blueprint (docs/lifecycle.md §6.6): registration checks the built-in contract on a probe host,
refuses each broken clause in one line, and the extended catalogue grows the blueprint in a model."""

import pytest
import torch
from seedbed_drive import PATIENT, drive_to, seeded
from torch import nn

from esper.core.catalogue import catalogue_for
from esper.core.errors import ConfigError
from esper.core.stages import Stage
from esper.shell.blueprint_check import BlueprintRefused, register
from esper.shell.model import MorphogeneticModel, seed_generator
from esper.shell.nets.blueprints import build_extension
from esper.shell.nets.hosts import host_for
from esper.shell.nets.stack_host import host_from_stack


class Scale(nn.Module):
    """δ(h) = h ⊙ w, w = 0 at birth: a well-behaved user blueprint with D parameters."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(d))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * self.w


def _probe_host():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 32), nn.BatchNorm1d(32), nn.ReLU(),
                        nn.Dropout(0.25), nn.Linear(32, 5))
    x = torch.randn(6, 12, generator=torch.Generator().manual_seed(1))
    return host_from_stack(seq, {"early": 1, "late": 4}, sample=x), x


def _refusal(build, params=lambda d: d, host_and_sample=None) -> BlueprintRefused:
    host, x = host_and_sample or _probe_host()
    with pytest.raises(BlueprintRefused) as caught:
        register(catalogue_for("mlp"), "mine", build, params, host=host, sample=x)
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith("blueprint 'mine' refused: ")
    return caught.value


def test_a_good_blueprint_extends_a_new_catalogue_and_leaves_the_probe_host_as_found():
    host, x = _probe_host()
    host.train()
    tensors = {k: v.clone() for k, v in host.state_dict().items()}
    rng = torch.get_rng_state()
    base = catalogue_for("mlp")
    extended = register(base, "scale", Scale, lambda d: d, host=host, sample=x)
    assert extended.names == (*base.names, "scale") and base == catalogue_for("mlp")
    assert extended.germinable_index("scale") == len(base.germinable)
    assert all(torch.equal(v, host.state_dict()[k]) for k, v in tensors.items())
    assert all(p.grad is None for p in host.parameters()) and host.training and host.blocks[5].training
    assert torch.equal(torch.get_rng_state(), rng)


def test_the_registered_blueprint_grows_in_a_model():
    host, x = _probe_host()
    catalogue = register(catalogue_for("mlp"), "scale", Scale, lambda d: d, host=host, sample=x)
    model = MorphogeneticModel(host, run_seed=0, lifecycle=PATIENT, catalogue=catalogue)
    state = seeded(model, "early", "scale")
    assert model.sync_to(state).added == ("early",)
    assert isinstance(model.slot("early").module, Scale) and state.slot("early").seed.n_params == 32
    model.sync_to(drive_to(state, model.rules(), "early", Stage.BLENDING))
    assert 0.0 < model.slot("early").alpha.item() < 1.0


def test_an_extension_is_built_deterministically_from_the_seed_generator():
    def noisy(d: int) -> nn.Module:
        module = Scale(d)
        module.v = nn.Parameter(torch.randn(d))  # drawn from the (forked, seeded) global RNG
        return module

    catalogue = catalogue_for("cnn").with_blueprint("noisy", noisy, lambda c: 2 * c)
    rng = torch.get_rng_state()
    a, b, c = (build_extension(catalogue, "noisy", 8, seed_generator(0, 0, 0, k, 0)) for k in (1, 1, 2))
    assert torch.equal(a.v, b.v) and not torch.equal(a.v, c.v)
    assert torch.equal(torch.get_rng_state(), rng)


# --- one deliberately broken blueprint per clause -------------------------------------------------


def test_a_builder_that_returns_no_module_is_refused_at_build():
    assert _refusal(lambda d: "not a module").check == "build"


def test_a_wrong_parameter_formula_is_refused():
    refused = _refusal(Scale, params=lambda d: d + 1)
    assert refused.check == "parameter formula" and "32 parameters, formula says 33" in str(refused)


def test_a_seed_that_is_not_zero_at_birth_is_refused():
    class Born(Scale):
        def __init__(self, d: int) -> None:
            super().__init__(d)
            nn.init.ones_(self.w)

    assert _refusal(Born).check == "identity at birth"


def test_a_seed_that_writes_into_the_host_features_is_refused_at_alpha_zero():
    class InPlace(Scale):
        def forward(self, h: torch.Tensor) -> torch.Tensor:
            h.mul_(2)  # the detached input shares the host's storage
            return h * self.w

    refused = _refusal(InPlace)
    assert refused.check == "alpha zero" and "slot early" in str(refused)


def test_a_seed_that_reaches_into_the_host_parameters_is_refused_for_isolation():
    host, x = _probe_host()
    tied = host.blocks[0].weight

    class Leaky(Scale):
        def forward(self, h: torch.Tensor) -> torch.Tensor:
            return h * self.w + (tied - tied.detach()).sum()  # zero in value, a gradient into the host

    refused = _refusal(Leaky, host_and_sample=(host, x))
    assert refused.check == "gradient isolation" and "blocks.0.weight" in str(refused)


def test_a_blueprint_that_fits_no_slot_and_a_taken_name_are_refused():
    host, x = _probe_host()
    with pytest.raises(BlueprintRefused, match="fits none of its slot dims"):
        register(catalogue_for("mlp"), "wide", Scale, lambda d: d, lambda d: d >= 64, host=host, sample=x)
    with pytest.raises(ConfigError, match="already has a blueprint 'lora'"):
        register(catalogue_for("mlp"), "lora", Scale, lambda d: d, host=host, sample=x)
    with pytest.raises(ConfigError, match="cannot be checked on a mlp host"):
        register(catalogue_for("cnn"), "scale", Scale, lambda d: d, host=host, sample=x)


def test_a_preset_host_is_a_probe_host_too():
    host = host_for("fashion-mnist", torch.Generator().manual_seed(0))
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))

    class ChannelScale(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(c, 1, 1))

        def forward(self, h: torch.Tensor) -> torch.Tensor:
            return h * self.w

    catalogue = register(catalogue_for("cnn"), "scale", ChannelScale, lambda c: c, host=host, sample=x)
    assert catalogue.names[-1] == "scale"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_blueprint_registers_and_grows_on_a_cuda_host_with_the_cpu_init():
    host, x = _probe_host()
    host, x = host.cuda(), x.cuda()
    catalogue = register(catalogue_for("mlp"), "scale", Scale, lambda d: d, host=host, sample=x)
    model = MorphogeneticModel(host, run_seed=0, lifecycle=PATIENT, catalogue=catalogue)
    state = seeded(model, "late", "scale")
    model.sync_to(state)
    module = model.slot("late").module
    cpu = build_extension(catalogue, "scale", 32, seed_generator(0, 0, 0, 1, state.slot("late").germinations))
    assert module.w.device.type == "cuda" and torch.equal(module.w.cpu(), cpu.w)
    model.train()
    model(x).sum().backward()
    assert module.w.grad is not None and module.w.grad.device.type == "cuda"


class ChannelScale(nn.Module):
    """δ(h) = h ⊙ w over the channels of (N, C, H, W) features, w = 0 at birth."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(d, 1, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * self.w


@pytest.mark.parametrize(("topology", "good"), [("mlp", Scale), ("transformer", Scale), ("cnn", ChannelScale)])
def test_without_a_host_the_topology_s_probe_stack_checks_the_blueprint(topology, good):
    extended = register(catalogue_for(topology), "scale", good, lambda d: d)
    assert extended.names[-1] == "scale"
    with pytest.raises(BlueprintRefused, match="parameter formula failed at slot"):
        register(catalogue_for(topology), "scale", good, lambda d: d + 1)


def test_a_probe_host_without_its_sample_is_refused():
    host, _ = _probe_host()
    with pytest.raises(ConfigError, match="together"):
        register(catalogue_for("mlp"), "scale", Scale, lambda d: d, host=host)
