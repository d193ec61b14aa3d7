"""What `--profile` computes, once per epoch, under its time budget (docs/runtime.md §4.4–§4.5).

    launch e   begin(model)          in-train probes admitted by the budget: layer grads, isolation
               train e (the probes see every batch) → end_train() → validate (confusion when asked)
               device_tree(...)      group sums, layer sums, isolation counts, confusion, weight norms:
                                     device tensors fetched with the epoch's one fetch
    collect e  collect(e, ...)       events from the fetched numbers; then activations and sharpness,
                                     each fetched right after it is computed (its true cost)

Free (no budget): the per-group RMS grad norms (the §2.4 sums), per-class accuracy and the confusion
matrix (one bincount per validation batch). Everything else is budgeted: with train_s the epoch's
train + validate time, a diagnostic of last measured cost c runs only if spent + c ≤ share·train_s
(in-train probes decide at launch against the previous epoch's train_s), else `diag.skipped`; one
with no cost yet runs once if share > 0. A diagnostic whose event the level or profile would drop is
not computed. The budget's costs, last train_s and the `diag` generator are run-checkpoint state.
"""

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import torch
from torch import Tensor

from esper.core import wire
from esper.core.diag_events import (
    DiagActivations,
    DiagConfusion,
    DiagGradients,
    DiagIsolation,
    DiagPerClass,
    DiagSharpness,
    DiagSkipped,
    DiagWeights,
    SlotActivation,
)
from esper.core.events import Event
from esper.shell.data.taskdata import TaskData
from esper.shell.diag_measures import (
    IsolationWatch,
    LayerGrads,
    activation_stats,
    probe_subset,
    sharpness,
    weight_norms,
)
from esper.shell.epoch import TrainSums, ValidationSums
from esper.shell.fetch import fetch
from esper.shell.model import MorphogeneticModel
from esper.shell.run_config import RunConfig

LAYERS, ISOLATION, WEIGHTS = "diag.gradients.layers", "diag.isolation", "diag.weights"
ACTIVATIONS, SHARPNESS = "diag.activations", "diag.sharpness"


@attrs.define
class Budget:
    """§4.5: each budgeted diagnostic's last cost, the last epoch's train_s, and this epoch's spending."""

    share: float
    costs: dict[str, float] = attrs.Factory(dict)
    train_s: float | None = None
    spent: float = 0.0

    def expected(self, name: str) -> float | None:
        return self.costs.get(name)

    def admits(self, name: str, budget_s: float) -> bool:
        cost = self.costs.get(name)
        return self.share > 0 if cost is None else self.spent + cost <= budget_s

    def charge(self, name: str, seconds: float) -> None:
        self.costs[name] = seconds
        self.spent += seconds


class Diagnostics:
    """One trainer's diagnostics (None for a profile and level that want none)."""

    def __init__(self, profile: wire.Profile, wanted: frozenset[str], data: TaskData, generator: torch.Generator,
                 autocast: torch.dtype | None) -> None:
        self.profile, self.wanted, self.data = profile, wanted, data
        self.generator, self.autocast = generator, autocast
        self.budget = Budget(profile.budget)
        self.classes = data.preset.modality == "images"  # per class of a text vocabulary: not computed
        self._subset: tuple[Tensor, Tensor] | None = None
        self._layers: LayerGrads | None = None
        self._isolation: IsolationWatch | None = None
        self._skipped: list[tuple[str, float, float]] = []

    @classmethod
    def for_run(cls, cfg: RunConfig, data: TaskData, generator: torch.Generator, autocast: torch.dtype | None, *,
                enabled: bool = True) -> "Diagnostics | None":
        """The run's diagnostics at its `--telemetry-level` and `--profile` (None: nothing to compute)."""
        level, profile = wire.Level.parse(cfg.telemetry_level), wire.Profile.parse(cfg.profile)
        wanted = frozenset(k for k in profile.diagnostics if wire.wants(level, profile, k))
        return cls(profile, wanted, data, generator, autocast) if enabled and wanted - {"diag.skipped"} else None

    # -- launch --------------------------------------------------------------------------------

    @property
    def confusion(self) -> bool:
        """Does validation count the confusion matrix (per-class accuracy or the matrix wanted)?"""
        return self.classes and bool(self.wanted & {"diag.per_class", "diag.confusion"})

    @property
    def hooks_forward(self) -> bool:
        """Does a training probe hook the forward (the isolation watch)? Such epochs train eagerly under
        --compile: a hook added per epoch would change the compiled step's guards (docs/runtime.md §2.6)."""
        return ISOLATION in self.wanted

    @contextmanager
    def training(self, model: MorphogeneticModel) -> Iterator[LayerGrads | None]:
        """Around train_epoch: the admitted in-train probes; yields the TrainProbe (or None)."""
        self.budget.spent, self._skipped = 0.0, []
        budget_s = self.budget.share * (self.budget.train_s or 0.0)
        self._layers = self._isolation = None
        if "diag.gradients" in self.wanted and self.profile.detailed and self._admit(LAYERS, budget_s):
            self._layers = LayerGrads(model)
        if ISOLATION in self.wanted and self._admit(ISOLATION, budget_s):
            self._isolation = IsolationWatch(model)
        try:
            yield self._layers
        finally:
            if self._isolation is not None:
                self._isolation.remove()

    def _admit(self, name: str, budget_s: float) -> bool:
        if self.budget.admits(name, budget_s):
            return True
        self._skipped.append((name, self.budget.expected(name) or 0.0, budget_s))
        return False

    def device_tree(self, model: MorphogeneticModel, sums: TrainSums, val: ValidationSums) -> dict[str, Any]:
        """The device tensors the epoch's one fetch carries back."""
        tree: dict[str, Any] = {"batches": sums.batches}
        if "diag.gradients" in self.wanted:
            tree["groups"] = {"host": sums.host_sq, **{f"seed:{s}": sq for s, sq in sums.seed_sq.items()}}
        if self._layers is not None:
            tree["layers"] = (self._layers.names, self._layers.per_layer())
            self.budget.charge(LAYERS, self._layers.seconds)
        if self._isolation is not None:
            tree["isolation"] = (self._isolation.slots, self._isolation.counts)
            self.budget.charge(ISOLATION, self._isolation.seconds)
        if val.confusion is not None:
            tree["confusion"] = val.confusion
        if WEIGHTS in self.wanted and self._admit(WEIGHTS, self.budget.share * (self.budget.train_s or 0.0)):
            started = time.perf_counter()
            tree["weights"] = weight_norms(model)
            self.budget.charge(WEIGHTS, time.perf_counter() - started)
        return tree

    # -- collect -------------------------------------------------------------------------------

    def collect(self, epoch: int, model: MorphogeneticModel, fetched: dict[str, Any], train_s: float) -> list[Event]:
        """The epoch's diag events: from the fetched numbers, then the post-fetch measurements."""
        self.budget.train_s = train_s
        events = self._fetched_events(epoch, fetched)
        budget_s = self.budget.share * train_s
        if ACTIVATIONS in self.wanted and self._admit(ACTIVATIONS, budget_s):
            events.append(self._activations(epoch, model))
        if SHARPNESS in self.wanted and self._admit(SHARPNESS, budget_s):
            events.append(self._sharpness(epoch, model))
        if "diag.skipped" in self.wanted:
            events += [DiagSkipped(epoch=epoch, name=n, expected_s=e, budget_s=b) for n, e, b in self._skipped]
        return events

    def _fetched_events(self, epoch: int, fetched: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        batches = max(int(fetched["batches"]), 1)
        if "groups" in fetched:
            layers = dict(zip(*fetched["layers"], strict=True)) if "layers" in fetched else {}
            events.append(DiagGradients(epoch=epoch, groups=_rms(fetched["groups"], batches),
                                        layers=_rms(layers, batches)))
        if "weights" in fetched:
            events.append(DiagWeights(epoch=epoch, layers=dict(zip(*fetched["weights"], strict=True))))
        matrix = fetched.get("confusion")
        if matrix is not None and "diag.per_class" in self.wanted:
            events.append(DiagPerClass(epoch=epoch, accuracy=per_class_accuracy(matrix)))
        if matrix is not None and "diag.confusion" in self.wanted:
            events.append(DiagConfusion(epoch=epoch, matrix=tuple(tuple(int(v) for v in row) for row in matrix)))
        if "isolation" in fetched:
            slots, counts = fetched["isolation"]
            events.append(DiagIsolation(epoch=epoch, batches=int(fetched["batches"]),
                                        violations={s: int(c) for s, c in zip(slots, counts, strict=True)}))
        return events

    def _subset_batch(self) -> tuple[Tensor, Tensor]:
        if self._subset is None:
            self._subset = probe_subset(self.data)
        return self._subset

    def _activations(self, epoch: int, model: MorphogeneticModel) -> DiagActivations:
        started = time.perf_counter()
        stats = fetch(activation_stats(model, self._subset_batch()[0], self.autocast))
        self.budget.charge(ACTIVATIONS, time.perf_counter() - started)
        slots = tuple(SlotActivation(slot=slot, host_mean=v[0], host_std=v[1], host_rms=v[2], delta_rms=v[3],
                                     alpha=v[4], ratio=v[5]) for slot, v in stats.items())
        return DiagActivations(epoch=epoch, slots=slots)

    def _sharpness(self, epoch: int, model: MorphogeneticModel) -> DiagSharpness:
        started = time.perf_counter()
        x, y = self._subset_batch()
        directions = self.profile.sharpness_directions
        value = fetch(sharpness(model, x, y, self.generator, directions, self.autocast))
        seconds = time.perf_counter() - started
        self.budget.charge(SHARPNESS, seconds)
        return DiagSharpness(epoch=epoch, sharpness=value, directions=directions, seconds=seconds)

    # -- run checkpoint ------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {"costs": dict(self.budget.costs), "train_s": self.budget.train_s, "rng": self.generator.get_state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.budget.costs = {str(k): float(v) for k, v in state["costs"].items()}
        self.budget.train_s = None if state["train_s"] is None else float(state["train_s"])
        self.generator.set_state(state["rng"])


def _rms(sums: dict[str, float], batches: int) -> dict[str, float]:
    return {name: math.sqrt(max(value, 0.0) / batches) for name, value in sums.items()}


def per_class_accuracy(matrix: list[list[float]]) -> tuple[float, ...]:
    """Row c: correct / held-out samples of class c (NaN for a class with none)."""
    return tuple(row[c] / sum(row) if sum(row) else math.nan for c, row in enumerate(matrix))
