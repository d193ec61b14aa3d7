"""Your own blueprint (docs/lifecycle.md §6.6): a catalogue extension checked against the built-in contract.

`register(catalogue, name, build, params, fits, host=, sample=)` (the probe: the user's host and a
batch like its inputs, or by default the topology's small stack, `probe_host`) returns
`catalogue.with_blueprint(...)` once the blueprint meets, at every slot of the probe `host` whose
dim it fits, with h the host's features at that slot on `sample` and δ the built module:

    build               build(dim) returns an nn.Module (a forked, seeded CPU RNG: `construct_extension`)
    parameter formula   Σ_θ numel(θ) = params(dim)
    identity at birth   δ(h) has h's shape and δ(h) = 0 exactly, so s(h) = h + δ(h) = h
    alpha zero          a TRAINING seed at α = 0 leaves the output bit-identical to the seedless host
                        (eval and train mode): no in-place write to h, no side effect on the host
    gradient isolation  in TRAINING (the seed reads h.detach(), straight-through) every host gradient
                        equals the seedless host's, bit for bit

A blueprint that breaks a clause is refused with a one-line `BlueprintRefused` (a `ConfigError`)
naming the clause and the slot. The probe host is left as it was found: its tensors, gradients and
train flags are restored, and the global RNG is forked around every seeded pass.
"""

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from esper.core.blend import knobs_for
from esper.core.catalogue import Catalogue
from esper.core.errors import ConfigError
from esper.core.seed import SlotSpec
from esper.core.stages import Stage
from esper.shell.model import MorphogeneticModel, SeedSlot, seed_generator
from esper.shell.nets.blueprints import construct_extension
from esper.shell.nets.dropout import dropout_generators
from esper.shell.nets.host_base import Host
from esper.shell.nets.stack_host import host_from_stack

CHECKS = ("build", "parameter formula", "identity at birth", "alpha zero", "gradient isolation")
PASS_SEED = 0  # global RNG and dropout generators start every compared pass from this seed


class BlueprintRefused(ConfigError):
    """A user blueprint broke a clause of the blueprint contract (`check` names it)."""

    def __init__(self, name: str, check: str, where: str, detail: str) -> None:
        detail = " ".join(str(detail).split())  # one line, whatever the exception said
        super().__init__(f"blueprint {name!r} refused: {check} failed at {where}: {detail}")
        self.name, self.check = name, check


def register(catalogue: Catalogue, name: str, build: Callable[[int], nn.Module], params: Callable[[int], int],
             fits: Callable[[int], bool] | None = None, *, host: Host | None = None,
             sample: Tensor | None = None) -> Catalogue:
    """`catalogue` plus blueprint `name`, once `check_blueprint` passes on `host` and `sample` (without them,
    on the topology's small probe stack, `probe_host`: check on your own host when its dims differ)."""
    extended = catalogue.with_blueprint(name, build, params, fits)
    if host is None or sample is None:
        if host is not None or sample is not None:
            raise ConfigError("register takes a probe host and its sample together, or neither")
        host, sample = probe_host(catalogue.topology)
    check_blueprint(extended, name, host, sample)
    return extended


def probe_host(topology: str) -> tuple[Host, Tensor]:
    """A small seeded stack of `topology` with slots of dims 16 and 64 (transformer: 32 and 64), and a sample."""
    gen = torch.Generator().manual_seed(PASS_SEED)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(PASS_SEED)
        if topology == "cnn":
            head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 4))
            blocks: list[nn.Module] = [nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 64, 3, padding=1),
                                       nn.ReLU(), head]
            sample = torch.randn(4, 3, 8, 8, generator=gen)
        elif topology == "mlp":
            blocks = [nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4)]
            sample = torch.randn(4, 8, generator=gen)
        elif topology == "transformer":
            blocks = [nn.Embedding(50, 32), nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 50)]
            sample = torch.randint(0, 50, (2, 8), generator=gen)
            return host_from_stack(blocks, {"embedded": 0, "widened": 2}, sample=sample), sample
        else:
            raise ConfigError(f"no probe host for topology {topology!r}: pass host= and sample=")
        return host_from_stack(blocks, {"narrow": 1, "wide": 3}, sample=sample), sample


def check_blueprint(catalogue: Catalogue, name: str, host: Host, sample: Tensor) -> None:
    """Raise `BlueprintRefused` unless extension `name` of `catalogue` meets every clause of `CHECKS`."""
    if catalogue.topology != host.config.KIND:
        raise ConfigError(f"a {catalogue.topology} catalogue cannot be checked on a {host.config.KIND} host")
    spec = catalogue.spec(name)
    fitting = [slot for slot in host.slot_specs if spec.fits(slot.dim)]
    if not fitting:
        dims = [slot.dim for slot in host.slot_specs]
        raise BlueprintRefused(name, "build", "the probe host", f"fits none of its slot dims {dims}")
    base = Catalogue(catalogue.topology, tuple(e for e in catalogue.entries if e.name != name))
    with _restored(host) as tensors:
        probe = _Probe(MorphogeneticModel(host, run_seed=0, catalogue=base, enabled=()), sample, tensors)
        reference = probe.eval_pass(), *probe.train_pass()
        for slot in fitting:
            _check_slot(probe, catalogue, name, slot, reference)


class _Probe:
    """The probe model and sample; every pass starts from the host's tensors as found (a train pass
    moves BatchNorm statistics) and from the same RNG states."""

    def __init__(self, model: MorphogeneticModel, sample: Tensor, tensors: dict[str, Tensor]) -> None:
        self.model, self.sample, self.tensors = model, sample, tensors

    def features(self, k: int) -> Tensor:
        """h at slot k: segments 0…k of the host in eval mode, without gradient."""
        host = self.model.host
        host.load_state_dict(self.tensors)
        host.eval()
        with torch.no_grad():
            h = self.sample.clone()
            for j in range(k + 1):
                h = host.segment(j, h)
        return h

    def eval_pass(self) -> Tensor:
        self.model.host.load_state_dict(self.tensors)
        self.model.eval()
        with torch.no_grad(), _seeded(self.model):
            return self.model(self.sample.clone())

    def train_pass(self) -> tuple[Tensor, dict[str, Tensor | None]]:
        """Output and host gradients of loss = Σ out ⊙ w (w fixed noise) in train mode."""
        model = self.model
        model.host.load_state_dict(self.tensors)
        model.train()
        model.zero_grad(set_to_none=True)
        with _seeded(model):
            out = model(self.sample.clone())
        weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(PASS_SEED)).to(out.device)
        (out.float() * weights).sum().backward()
        grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.host.named_parameters()}
        return out.detach(), grads


Reference = tuple[Tensor, Tensor, dict[str, Tensor | None]]  # seedless eval output, train output, host grads


def _check_slot(probe: _Probe, catalogue: Catalogue, name: str, spec: SlotSpec, reference: Reference) -> None:
    where = f"slot {spec.name} (dim {spec.dim})"
    formula = catalogue.spec(name).params(spec.dim)
    with _clause(name, "build", where):
        module = construct_extension(catalogue, name, spec.dim, seed_generator(0, 0, 0, spec.index, 0))
    count = sum(p.numel() for p in module.parameters())
    if count != formula:
        raise BlueprintRefused(name, "parameter formula", where, f"{count} parameters, formula says {formula}")
    ref = next(probe.model.host.parameters())
    module = module.to(device=ref.device, dtype=ref.dtype)
    with _clause(name, "identity at birth", where):
        h = probe.features(spec.index)
        delta = module.eval()(h.clone())
    if tuple(delta.shape) != tuple(h.shape):
        raise BlueprintRefused(name, "identity at birth", where, f"δ(h) has shape {tuple(delta.shape)}, "
                                                                 f"h has {tuple(h.shape)}")
    if not bool((delta == 0).all()):
        raise BlueprintRefused(name, "identity at birth", where, "δ(h) is not zero at birth")
    slot = probe.model.slot(spec.name)
    _install_training(slot, module, name)
    try:
        _check_live(probe, name, where, reference)
    finally:
        slot.clear(Stage.DORMANT)


def _check_live(probe: _Probe, name: str, where: str, reference: Reference) -> None:
    """alpha zero (eval, then train outputs) and gradient isolation (train) of the installed TRAINING seed."""
    eval_ref, train_ref, grads_ref = reference
    with _clause(name, "alpha zero", where):
        eval_out = probe.eval_pass()
    if not torch.equal(eval_out, eval_ref):
        raise BlueprintRefused(name, "alpha zero", where, "the eval-mode output at α = 0 differs from the "
                                                          "seedless host's")
    with _clause(name, "gradient isolation", where):
        train_out, grads = probe.train_pass()
    if not torch.equal(train_out, train_ref):
        raise BlueprintRefused(name, "alpha zero", where, "the train-mode output at α = 0 differs from the "
                                                          "seedless host's")
    changed = [n for n, g in grads.items() if not _same(g, grads_ref[n])]
    if changed:
        raise BlueprintRefused(name, "gradient isolation", where, f"host gradients changed in TRAINING: "
                                                                  f"{', '.join(changed[:3])}")


def _install_training(slot: SeedSlot, module: nn.Module, name: str) -> None:
    """What `sync_to` does for a TRAINING seed: the module, the §5 knobs (ste, detached input), α = 0."""
    slot.install(module, f"probe-{name}", name)
    slot.stage = Stage.TRAINING
    slot.knobs = knobs_for(Stage.TRAINING)
    slot.alpha.fill_(0.0)


def _same(a: Tensor | None, b: Tensor | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))


@contextlib.contextmanager
def _seeded(model: MorphogeneticModel) -> Iterator[None]:
    """The global RNG (forked) and every dropout generator of the model start from PASS_SEED."""
    generators = dropout_generators(model)
    states = [g.get_state() for g in generators]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(PASS_SEED)
        for g in generators:
            g.manual_seed(PASS_SEED)
        try:
            yield
        finally:
            for g, state in zip(generators, states, strict=True):
                g.set_state(state)


@contextlib.contextmanager
def _clause(name: str, check: str, where: str) -> Iterator[None]:
    """An exception inside a clause refuses the blueprint for that clause."""
    try:
        yield
    except BlueprintRefused:
        raise
    except Exception as exc:  # any failure of user code is a refusal, reported in one line
        raise BlueprintRefused(name, check, where, f"{type(exc).__name__}: {exc}") from exc


@contextlib.contextmanager
def _restored(host: nn.Module) -> Iterator[dict[str, Tensor]]:
    """Leave `host` as found: tensors (parameters and buffers), gradients and train flags."""
    tensors = {key: value.clone() for key, value in host.state_dict().items()}
    grads: dict[str, Any] = {n: None if p.grad is None else p.grad.clone() for n, p in host.named_parameters()}
    modes = [(module, module.training) for module in host.modules()]
    try:
        yield tensors
    finally:
        host.load_state_dict(tensors)
        for n, p in host.named_parameters():
            p.grad = grads[n]
        for module, training in modes:
            module.training = training
