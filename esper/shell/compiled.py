"""The compiled train step and validation pass, one per model structure (docs/runtime.md §2.6).

`--compile MODE` (auto | off | default | reduce-overhead; auto = reduce-overhead on CUDA, off on CPU)
compiles, with `torch.compile(fullgraph=True, isolate_recompiles=True)`, once per key

    key = (mode, backend, host config, model.structure_key(), measured slots)

its functions, cached for the whole process (a rollback's rebuilt model, a resumed one, every PPO env
of the same structure reuse them: dynamo reads the parameters and buffers as graph inputs):

    train step   logits = model(x); (L, correct) = Σ_i CE(logits_i, y_i), Σ_i [argmax logits_i = y_i]
                 (AOTAutograd also compiles its backward; `backward` itself is called eagerly, since
                 dynamo does not trace `Tensor.backward`, so the diagnostics' probe still sees the grads)
    grad sums    S_host = Σ_p ‖∇p‖² over the host, S_k = Σ_p ‖∇p‖² over slot k's seed (measured slots)
    validation   every variant's logits through the variant tree (`variant_tree.run_tree`: the variants
                 share the network before the slots where they differ), one graph per tree shape
                 (which groups split where, and which override a slot's alpha); the batch dimension is
                 dynamic, so a short last chunk never recompiles

Every per-epoch knob enters as a tensor: a slot's alpha is its `alpha` buffer (an alpha ramp writes
it in place), the variants' override alphas are views of a device buffer refilled per call (so an α→1
shadow and an α→0 ablation of the same slot share a graph); the lr never enters (the optimizer step
stays eager: its lr is a Python float in the param groups, which a compiled step would specialise
on and recompile at every schedule step; making it a tensor changes the checkpointed optimizer
state, left for later). So only a new key or a new tree shape compiles: `compile_count()` (dynamo's
graph counter) rises by 3 per key (train step, grad sums, the validation of the run's usual plan) and
never on an alpha or lr change.

reduce-overhead (CUDA graphs): each batch is copied into static input buffers (one per shape, their
addresses marked static) and `cudagraph_mark_step_begin` starts every step; nothing in the step reads
a value back to the host. Compile with W > 1 ranks (DDP) is refused (`resolve_compile`).
"""

import sys
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import attrs
import torch
from torch import Tensor

from esper.core.errors import ConfigError
from esper.shell.dist import Ranks
from esper.shell.model import MorphogeneticModel
from esper.shell.run_config import COMPILE_MODES
from esper.shell.variant_tree import Alpha, VariantTree, run_tree


def resolve_compile(mode: str, device: torch.device, ranks: Ranks | None = None) -> str | None:
    """The torch.compile mode to use, or None for eager. auto: reduce-overhead on CUDA, off elsewhere
    and for several ranks; an explicit mode with several ranks is refused (DDP is not compiled)."""
    if mode not in COMPILE_MODES:
        raise ConfigError(f"--compile must be one of {', '.join(COMPILE_MODES)}; got {mode!r}")
    distributed = ranks is not None and ranks.distributed
    if mode == "auto":
        return "reduce-overhead" if device.type == "cuda" and not distributed else None
    if mode == "off":
        return None
    if distributed:
        raise ConfigError(f"--compile {mode} needs one rank (data-parallel runs train eagerly); use --compile off")
    return mode


def compiled_steps(mode: str, device: torch.device, ranks: Ranks | None = None) -> "CompiledSteps | None":
    """A run's compiled steps for `--compile mode`, or None when it trains eagerly."""
    resolved = resolve_compile(mode, device, ranks)
    return None if resolved is None else CompiledSteps(resolved)


def compile_count() -> int:
    """Graphs dynamo has compiled in this process so far (a compile or a recompile each); 0 before
    anything imported dynamo (an eager run never loads it)."""
    if "torch._dynamo.utils" not in sys.modules:
        return 0
    return int(sys.modules["torch._dynamo.utils"].counters["stats"]["unique_graphs"])


def _forward_loss(model: MorphogeneticModel, x: Tensor, y: Tensor,
                  autocast: torch.dtype | None) -> tuple[Tensor, Tensor]:
    with torch.autocast(x.device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        logits = model(x)
    flat_logits = logits.reshape(-1, logits.shape[-1]).float()
    flat_targets = y.reshape(-1)
    loss = torch.nn.functional.cross_entropy(flat_logits, flat_targets, reduction="sum")
    return loss, (flat_logits.argmax(-1) == flat_targets).sum()


def _sq(grads: list[Tensor], like: Tensor) -> Tensor:
    return torch.stack(torch._foreach_norm(grads)).float().pow(2).sum() if grads else like.new_zeros(())


def _grad_sums(host: list[Tensor], seeds: list[list[Tensor]], like: Tensor) -> tuple[Tensor, list[Tensor]]:
    host_grads = [p.grad for p in host if p.grad is not None]
    return _sq(host_grads, like), [_sq([p.grad for p in ps if p.grad is not None], like) for ps in seeds]


def _tree_logits(model: MorphogeneticModel, x: Tensor, tree: VariantTree, autocast: torch.dtype | None) -> Tensor:
    with torch.autocast(x.device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        return run_tree(model.host, model.seed_slots(), x, tree)


def tree_shape(tree: VariantTree) -> tuple[Any, ...]:
    """What the traced validation pass depends on: the groups and which of them override (not the
    override values, which enter as a tensor)."""
    branches = tuple(None if b is None else (b.parents, tuple(a is None for a in b.alphas), b.n_in)
                     for b in tree.branches)
    return branches, tree.leaves


def overrides(tree: VariantTree) -> tuple[float, ...]:
    """The tree's override alphas in branch order (the values `with_overrides` puts back)."""
    return tuple(float(a) for b in tree.branches if b is not None for a in b.alphas if a is not None)


def with_overrides(tree: VariantTree, values: Sequence[Alpha]) -> VariantTree:
    """`tree` with its override alphas replaced, in branch order, by `values`."""
    it = iter(values)
    branches = tuple(None if b is None else attrs.evolve(b, alphas=tuple(None if a is None else next(it)
                                                                          for a in b.alphas))
                     for b in tree.branches)
    return attrs.evolve(tree, branches=branches)


@attrs.frozen(eq=False)
class _TreePass:
    """One tree shape's compiled validation: its override alphas are views of `values`, a device
    buffer each call refills, so new override values (α→1 shadows, α→0 ablations) never recompile."""

    fn: Any
    values: Tensor

class CompiledSteps:
    """The compiled functions of a run, looked up per model structure in the process-wide cache."""

    _cache: ClassVar[dict[tuple[Any, ...], dict[str, Any]]] = {}  # shared by every run of the process

    def __init__(self, mode: str, backend: str = "inductor") -> None:
        self.mode, self.backend = mode, backend
        self._static: dict[tuple[Any, ...], Tensor] = {}

    @classmethod
    def clear_cache(cls) -> None:
        """Forget every structure's compiled functions (tests that count compiles start from none)."""
        cls._cache.clear()

    def _compile(self, fn: Any, dynamic: bool | None = None) -> Any:
        options = {"mode": self.mode} if self.backend == "inductor" else {}
        return torch.compile(fn, fullgraph=True, backend=self.backend, dynamic=dynamic, isolate_recompiles=True,
                             **options)

    def functions(self, model: MorphogeneticModel, measured: Sequence[str]) -> dict[str, Any]:
        """This structure's compiled functions (compiled lazily at their first call)."""
        key = (self.mode, self.backend, repr(model.host.config), model.structure_key(), tuple(measured))
        if key not in self._cache:
            self._cache[key] = {"train": self._compile(_forward_loss), "grads": self._compile(_grad_sums),
                                "trees": {}}
        return self._cache[key]

    def static_input(self, tensor: Tensor, slot: str) -> Tensor:
        """Under CUDA graphs, `tensor` copied into this run's static buffer of its shape; else itself."""
        if self.mode != "reduce-overhead":
            return tensor
        key = (slot, tuple(tensor.shape), tensor.dtype, tensor.device)
        if key not in self._static:
            self._static[key] = torch.empty_like(tensor)
            torch._dynamo.mark_static_address(self._static[key])
        return self._static[key].copy_(tensor)

    def begin_step(self) -> None:
        if self.mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()

    def validate_logits(self, model: MorphogeneticModel, x: Tensor, variants: Sequence[Mapping[str, float]],
                        autocast: torch.dtype | None) -> Tensor:
        """forward_variants(x, variants) through the compiled pass of its tree's shape: [V, B, ...] logits."""
        for variant in variants:
            model._check_override(variant)
        tree = model.variant_tree(variants)
        trees = self.functions(model, ())["trees"]
        shape, values = (tree_shape(tree), x.device), overrides(tree)
        if shape not in trees:
            buffer = torch.zeros(len(values), device=x.device)
            template = with_overrides(tree, buffer.unbind(0))
            trees[shape] = _TreePass(self._compile(lambda m, xs, cast: _tree_logits(m, xs, template, cast)), buffer)
        entry = trees[shape]
        entry.values.copy_(self._override_values(values, x.device))
        torch._dynamo.maybe_mark_dynamic(x, 0)  # a short last chunk does not recompile
        self.begin_step()
        return entry.fn(model, x, autocast)

    def _override_values(self, values: tuple[float, ...], device: torch.device) -> Tensor:
        """`values` on the device, made once per distinct tuple (no host→device copy per chunk)."""
        key = ("overrides", values, device)
        if key not in self._static:
            self._static[key] = torch.tensor(values, dtype=torch.float32, device=device)
        return self._static[key]
