"""`MorphogeneticModel`: a host with live seed modules in its slots (docs/lifecycle.md §8).

The model mirrors the pure lifecycle and never decides. Its only structural mutator is
`sync_to(state)`, which builds, removes and re-stages seed modules so that the module tree
matches the `LifecycleState` the lifecycle produced. The forward runs the host's segment
chain with each slot's blend in between:

    h = seg_0(x); for slot k: h = slot_k(h); h = seg_{k+1}(h)
    slot_k(h) = blend(h, δ(seed_input(h, input_grad)), α, ste)      (identity when empty)

Counterfactuals (`alpha_override`, `forward_variants`: the variants share their prefix, see
`variant_tree`) only read state. Optimizer parameter
groups (§8.5) live in `optim_groups`, save/load in `checkpoint`.
"""

import functools
from collections.abc import Collection, Mapping, Sequence

import attrs
import numpy as np
import torch
from torch import Tensor, nn

from esper.core.blend import BlendKnobs, blend, knobs_for, seed_input
from esper.core.catalogue import Catalogue, Entry, ValidationTable, catalogue_for
from esper.core.config import LifecycleConfig, Rules
from esper.core.errors import ConfigError, HostCatalogueMismatch, HostConfigError, LifecycleError
from esper.core.lifecycle import ParamCounts
from esper.core.seed import LifecycleState, SlotSpec, SlotState
from esper.core.stages import HAS_MODULE, Stage
from esper.shell.nets.blueprints import build_blueprint, build_extension
from esper.shell.nets.host_base import Host
from esper.shell.variant_tree import VariantTree, on_device, run_tree, variant_tree

LIVE_WITH_MODULE = frozenset({Stage.TRAINING, Stage.BLENDING, Stage.PROBATIONARY})
TRANSFORMER_PROBE_LENGTH = 8  # §6.4: transformer probes are (2, 8, D)
VALIDATION_SEED = 0  # fixed generator for §6.4's probe builds


class SyncError(LifecycleError):
    """`sync_to` met a state the module tree cannot mirror (GERMINATED, wrong blueprint or layout)."""


class OverrideError(ValueError):
    """An alpha override or variant the model refuses (training mode, unknown slot, bad value)."""


@attrs.frozen
class StructureChange:
    """Slot ids whose module `sync_to` built, removed, fossilized, or moved to another stage."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    fossilized: tuple[str, ...] = ()
    restaged: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.fossilized or self.restaged)


# --- §6.4 validation -------------------------------------------------------------------------


def probe_shape(topology: str, spec: SlotSpec) -> tuple[int, ...]:
    """The probe a blueprint must map to itself: (2, C, H, W) at the slot's real size, (2, D) for
    flat features, or (2, 8, D)."""
    if topology in ("cnn", "mlp"):
        return (2, *spec.feature_shape)
    return (2, TRANSFORMER_PROBE_LENGTH, spec.dim)


def validate_catalogue(
    catalogue: Catalogue, slot_specs: Sequence[SlotSpec], enabled: Collection[str] | None = None,
) -> ValidationTable:
    """Build every fitting blueprint for every slot and probe it (docs/lifecycle.md §6.4).

    Entries: True = built and probed, None = the constraint rejects the slot's dim (unfit).
    A probe failure raises `HostCatalogueMismatch` naming slot and blueprint; an enabled slot
    (default: all) with no germinable blueprint raises `HostConfigError`.
    """
    rows = _probed_rows(catalogue, tuple(slot_specs))
    germinable = [entry.index for entry in catalogue.germinable]
    for spec, row in zip(slot_specs, rows, strict=True):
        if (enabled is None or spec.name in enabled) and not any(row[i] for i in germinable):
            raise HostConfigError(f"slot {spec.name} (dim {spec.dim}) admits no germinable "
                                  f"{catalogue.topology} blueprint")
    return ValidationTable(rows)


@functools.lru_cache(maxsize=64)
def _probed_rows(catalogue: Catalogue, slot_specs: tuple[SlotSpec, ...]) -> tuple[tuple[Entry, ...], ...]:
    """Probe results per slot; cached per process because they depend only on the catalogue's code
    and the slot shapes (PPO builds a model per episode; restores build one per rollback).
    A failing probe raises, so only passing tables are ever cached."""
    return tuple(tuple(_probe(catalogue, spec, entry.name) if entry.fits(spec.dim) else None
                       for entry in catalogue.entries) for spec in slot_specs)


def _probe(catalogue: Catalogue, spec: SlotSpec, name: str) -> bool:
    where = f"slot {spec.name} (dim {spec.dim}), {catalogue.topology} blueprint {name!r}"
    generator = torch.Generator().manual_seed(VALIDATION_SEED)
    try:
        module = build_module(catalogue, name, spec.dim, generator)
    except (HostCatalogueMismatch, ValueError) as exc:
        raise HostCatalogueMismatch(f"{where}: {exc}") from exc
    probe = torch.randn(probe_shape(catalogue.topology, spec), generator=generator)
    with torch.no_grad():
        out = module.eval()(probe)
    count, formula = sum(p.numel() for p in module.parameters()), catalogue.spec(name).params(spec.dim)
    if out.shape != probe.shape:
        raise HostCatalogueMismatch(f"{where}: δ(probe) has shape {tuple(out.shape)}, "
                                    f"probe {tuple(probe.shape)}")
    if not bool((out == 0).all()):
        raise HostCatalogueMismatch(f"{where}: δ(probe) is not zero at birth")
    if count != formula:
        raise HostCatalogueMismatch(f"{where}: {count} parameters, formula {formula}")
    return True


def build_module(catalogue: Catalogue, name: str, dim: int, generator: torch.Generator) -> nn.Module:
    """A seed module of `catalogue`: a built-in one from `blueprints`, an extension from its builder."""
    if catalogue.spec(name).build is None:
        return build_blueprint(catalogue.topology, name, dim, generator)
    return build_extension(catalogue, name, dim, generator)


def seed_generator(run_seed: int, episode: int, env_index: int, slot_index: int,
                   germinations: int) -> torch.Generator:
    """§8.1's only seed-init rule: a CPU generator seeded from the first 64-bit word of
    SeedSequence([run_seed, episode, env_index, slot, germinations]); no rank or device input."""
    entropy = [run_seed, episode, env_index, slot_index, germinations]
    word = np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(word))


# --- slots -----------------------------------------------------------------------------------


class SeedSlot(nn.Module):
    """One slot: an optional seed module (δ), its blend knobs and its alpha buffer."""

    def __init__(self, spec: SlotSpec, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        self.slot_id, self.index, self.dim = spec.name, spec.index, spec.dim
        self.register_module("seed", None)
        self.blueprint: str | None = None
        self.seed_id: str | None = None
        self.stage = Stage.DORMANT
        self.knobs: BlendKnobs | None = None
        # Non-persistent: the lifecycle state is the only alpha store; sync_to writes it here.
        self.register_buffer("alpha", torch.zeros((), dtype=dtype, device=device), persistent=False)

    @property
    def module(self) -> nn.Module | None:
        return self._modules["seed"]

    @property
    def active(self) -> bool:
        """The seed runs in the forward (a module with knobs); otherwise the slot is the identity."""
        return self.module is not None and self.knobs is not None

    def forward(self, h: Tensor, alpha: Tensor | None = None) -> Tensor:
        return self.mix(h, self.delta(h), alpha) if self.active else h

    def delta(self, h: Tensor) -> Tensor:
        """δ(seed_input(h)): what the slot adds at α = 1 (needs an active slot)."""
        assert self.knobs is not None
        return self.module(seed_input(h, self.knobs.input_grad))

    def mix(self, h: Tensor, d: Tensor, alpha: Tensor | None = None) -> Tensor:
        """blend(h, d, α, ste) with the slot's alpha, or `alpha` (0-dim, or per sample (N,))."""
        assert self.knobs is not None
        a = (self.alpha if alpha is None else alpha).to(h.dtype)  # dtype of h: exact per-sample parity
        if a.dim():
            a = a.reshape(-1, *([1] * (h.dim() - 1)))  # per sample: (N,) -> (N, 1, …)
        return blend(h, d, a, self.knobs.ste)

    def install(self, module: nn.Module, seed_id: str, blueprint: str) -> None:
        self.seed, self.seed_id, self.blueprint = module, seed_id, blueprint

    def clear(self, stage: Stage) -> None:
        self.seed, self.seed_id, self.blueprint, self.knobs, self.stage = None, None, None, None, stage
        self.alpha.fill_(0.0)

    def n_params(self) -> int:
        return 0 if self.module is None else sum(p.numel() for p in self.module.parameters())


# --- the model -------------------------------------------------------------------------------


class MorphogeneticModel(nn.Module):
    """A host plus one `SeedSlot` per host slot spec; mirrors a `LifecycleState` via `sync_to`."""

    def __init__(
        self, host: Host, *, run_seed: int, episode: int = 0, env_index: int = 0,
        lifecycle: LifecycleConfig | None = None, catalogue: Catalogue | None = None,
        enabled: Collection[str] | None = None,
    ) -> None:
        super().__init__()
        if min(run_seed, episode, env_index) < 0:
            raise ConfigError(f"run_seed, episode, env_index must be >= 0, got "
                              f"{run_seed}, {episode}, {env_index}")
        if not host.slot_specs:
            raise HostConfigError("a MorphogeneticModel needs a host with at least one slot")
        self.topology: str = host.config.KIND
        self.catalogue = catalogue or catalogue_for(self.topology)
        if self.catalogue.topology != self.topology:
            raise ConfigError(f"{self.catalogue.topology} catalogue for a {self.topology} host")
        self.run_seed, self.episode, self.env_index = run_seed, episode, env_index
        self.lifecycle_config = lifecycle or LifecycleConfig()
        self.validation = validate_catalogue(self.catalogue, host.slot_specs, enabled)
        self.host = host
        ref = next(host.parameters())
        # A list, not a ModuleDict: any valid slot name (even "training") works, keys are slots.<index>.
        self.slots = nn.ModuleList(SeedSlot(spec, ref.dtype, ref.device) for spec in host.slot_specs)
        self._by_id = {spec.name: spec.index for spec in host.slot_specs}
        self.host_params = sum(p.numel() for p in host.parameters())

    # -- queries ---------------------------------------------------------------------------

    @property
    def slot_ids(self) -> tuple[str, ...]:
        return tuple(self._by_id)

    def slot(self, slot_id: str) -> SeedSlot:
        if slot_id not in self._by_id:
            raise KeyError(f"no slot {slot_id!r}; slots are {list(self._by_id)}")
        return self.slots[self._by_id[slot_id]]  # type: ignore[return-value]

    def seed_slots(self) -> tuple[SeedSlot, ...]:
        return tuple(self.slots)  # type: ignore[arg-type]

    def rules(self, config: LifecycleConfig | None = None) -> Rules:
        """The pure lifecycle's rules for this model: config, catalogue and the probed table."""
        config = config or self.lifecycle_config
        if config.input_grad_from != self.lifecycle_config.input_grad_from:
            # The model sets the knobs from its own config; a different one would disagree.
            raise ConfigError(f"config input_grad_from {config.input_grad_from.name} differs from the "
                              f"model's {self.lifecycle_config.input_grad_from.name}")
        return Rules(config, self.catalogue, self.validation)

    def param_counts(self) -> ParamCounts:
        """Host, live-seed and fossil parameter counts, from the modules themselves (§8.4)."""
        live = sum(s.n_params() for s in self.seed_slots() if s.stage in LIVE_WITH_MODULE)
        fossil = sum(s.n_params() for s in self.seed_slots() if s.stage == Stage.FOSSILIZED)
        return ParamCounts(host=self.host_params, live=live, fossilized=fossil)

    def structure_key(self) -> tuple[tuple[str | None, bool, bool], ...]:
        """Per slot (blueprint or None, ste, input_grad): the train step's compile key."""
        return tuple((s.blueprint, s.knobs.ste, s.knobs.input_grad) if s.knobs else (None, False, False)
                     for s in self.seed_slots())

    # -- sync_to ---------------------------------------------------------------------------

    def sync_to(self, state: LifecycleState) -> StructureChange:
        """Make the module tree mirror `state` (§8.1). Checks everything before changing anything."""
        self._check_layout(state)
        for slot, target in zip(self.seed_slots(), state.slots, strict=True):
            self._check_slot(slot, target)
        outcomes: dict[str, list[str]] = {"added": [], "removed": [], "fossilized": [], "restaged": []}
        for slot, target in zip(self.seed_slots(), state.slots, strict=True):
            outcome = self._sync_slot(slot, target)
            if outcome is not None:
                outcomes[outcome].append(slot.slot_id)
        return StructureChange(**{k: tuple(v) for k, v in outcomes.items()})

    def _check_layout(self, state: LifecycleState) -> None:
        if state.topology != self.topology:
            raise SyncError(f"a {state.topology} lifecycle state cannot drive a {self.topology} model")
        layout = [(s.slot_id, s.dim) for s in state.slots]
        mine = [(s.slot_id, s.dim) for s in self.seed_slots()]
        if layout != mine:
            raise SyncError(f"state slots {layout} do not match the model's (slot, dim) layout {mine}")

    def _check_slot(self, slot: SeedSlot, target: SlotState) -> None:
        seed = target.seed
        if target.stage == Stage.GERMINATED:
            raise SyncError(f"slot {slot.slot_id}: GERMINATED never survives act, cannot sync to it")
        if seed is None or seed.stage not in HAS_MODULE:
            return
        if self.catalogue.index_of(seed.blueprint) != seed.blueprint_index:
            raise SyncError(f"slot {slot.slot_id}: blueprint {seed.blueprint!r} is not catalogue "
                            f"index {seed.blueprint_index}")
        if slot.module is not None and (slot.blueprint, slot.seed_id) != (seed.blueprint, seed.seed_id):
            raise SyncError(f"slot {slot.slot_id} holds {slot.seed_id} ({slot.blueprint}) but the state "
                            f"has {seed.seed_id} ({seed.blueprint}); rebuild the model to restore")

    def _sync_slot(self, slot: SeedSlot, target: SlotState) -> str | None:
        seed = target.seed
        if seed is None or seed.stage not in HAS_MODULE:
            had_module = slot.module is not None
            slot.clear(target.stage)
            return "removed" if had_module else None
        outcome = None
        if slot.module is None:
            slot.install(self._build(target), seed.seed_id, seed.blueprint)
            outcome = "added"
        elif slot.stage != seed.stage:
            outcome = "fossilized" if seed.stage == Stage.FOSSILIZED else "restaged"
        slot.stage = seed.stage
        slot.knobs = knobs_for(seed.stage, self.lifecycle_config.input_grad_from)
        slot.alpha.fill_(seed.alpha)
        return outcome

    def _build(self, target: SlotState) -> nn.Module:
        seed = target.seed
        assert seed is not None  # _sync_slot builds only for seeds with a module
        generator = seed_generator(self.run_seed, self.episode, self.env_index, target.index,
                                   target.germinations)
        module = build_module(self.catalogue, seed.blueprint, seed.dim, generator)
        count = sum(p.numel() for p in module.parameters())
        if count != seed.n_params:
            raise SyncError(f"slot {target.slot_id}: {seed.blueprint} has {count} parameters, "
                            f"state says n_params={seed.n_params}")
        ref = next(self.host.parameters())
        # Built on the CPU generator, then moved: the initial seed is the same on every device.
        return module.to(device=ref.device, dtype=ref.dtype).train(self.training)

    # -- forward ---------------------------------------------------------------------------

    def forward(self, x: Tensor, alpha_override: Mapping[str, float | Tensor] | None = None) -> Tensor:
        """The host's segment chain with every slot's blend; `alpha_override` (eval only) replaces
        slots' alphas for this call and mutates nothing."""
        return self._run(x, self._overrides(alpha_override))

    def _run(self, x: Tensor, alphas: Mapping[str, Tensor]) -> Tensor:
        h = self.host.segment(0, x)
        for k, slot in enumerate(self.seed_slots()):
            h = slot(h, alphas.get(slot.slot_id))
            h = self.host.segment(k + 1, h)
        return h

    def _overrides(self, override: Mapping[str, float | Tensor] | None) -> dict[str, Tensor]:
        """The checked override as alpha tensors on the model's device, for the slots holding a module."""
        if not override:
            return {}
        return {slot.slot_id: on_device(override[slot.slot_id], slot.alpha) for slot in self._check_override(override)}

    def _check_override(self, override: Mapping[str, float | Tensor] | None) -> list[SeedSlot]:
        """Raise on a bad override; return the overridden slots that hold a module (an empty slot
        overridden to 0 is the identity it already is)."""
        if not override:
            return []
        if self.training:
            raise OverrideError("alpha overrides need eval mode (they would change BatchNorm statistics)")
        slots = []
        for slot_id, value in override.items():
            slot = self._override_slot(slot_id)
            # Checked on the host: a number costs nothing, a tensor is read back once (tests pass
            # tensors; the measurement plan passes numbers, so validation never syncs a GPU).
            values = value.detach().cpu() if isinstance(value, Tensor) else torch.tensor(float(value))
            if bool(((values < 0) | (values > 1) | values.isnan()).any()):
                raise OverrideError(f"slot {slot_id}: alpha override outside [0, 1]")
            if slot.module is None:
                if bool((values != 0).any()):
                    raise OverrideError(f"slot {slot_id} is empty: only alpha 0 can be overridden")
                continue
            slots.append(slot)
        return slots

    def _override_slot(self, slot_id: str) -> SeedSlot:
        if slot_id not in self._by_id:
            raise OverrideError(f"no slot {slot_id!r}; slots are {list(self._by_id)}")
        return self.slot(slot_id)

    def forward_variants(self, x: Tensor, variants: Sequence[Mapping[str, float]]) -> Tensor:
        """Evaluate V alpha variants in one pass: out[v] == forward(x, variants[v]) (§8.3, eval only).

        Slots a variant does not name keep their own alpha. The variants share their prefix
        (`variant_tree`): each segment runs once per group of variants still identical there.
        """
        if self.training:
            raise OverrideError("forward_variants needs eval mode")
        if not variants:
            raise OverrideError("forward_variants needs at least one variant")
        for variant in variants:
            self._check_override(variant)  # same checks as forward's override, per variant
        return run_tree(self.host, self.seed_slots(), x, self.variant_tree(variants))

    def variant_tree(self, variants: Sequence[Mapping[str, float]]) -> VariantTree:
        """How `forward_variants` shares the network among `variants` (its `widths`: groups per segment)."""
        return variant_tree(variants, [(slot.slot_id, slot.active) for slot in self.seed_slots()])
