"""The epoch engine (docs/runtime.md §2.1): one `run_epoch` for every controller.

    0  plan = measurement_plan(state)
    1  train one epoch;  2  validate every variant of the plan in one pass per batch
    3  fetch the epoch's numbers with one device→host copy
    4  governor verdict; PANIC → restore the snapshot, and the view comes from lifecycle.rollback
    5  tracker update; view = lifecycle.record(state, m)
    6  masks, controller;  7  apply_action, model.sync_to, optimizer groups
    8  heuristic.observe; tracker.structure_changed after a fossilization
    9  OK → snapshot;  10  telemetry (the run loop writes metrics.csv and checkpoints)

The trainer never decides a stage: the pure core does, and `sync_to` mirrors it.
"""

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import attrs
import numpy as np
import torch

from esper.core import codec, governor, heuristic, lifecycle, lr_schedule, signals
from esper.core.actions import ActionMasks, FactoredAction
from esper.core.catalogue import Catalogue
from esper.core.config import LifecycleConfig, Rules
from esper.core.errors import ConfigError
from esper.core.events import EpochMetrics, Event, GovernorAbort, GovernorRollback, SeedMetrics, SlotStatus
from esper.core.legality import masks
from esper.core.measurements import EpochMeasurements
from esper.core.seed import LifecycleState
from esper.core.stages import LIVE, Stage
from esper.core.summary import SeedRecord, summarize_seeds
from esper.core.tasks import TaskPreset
from esper.shell.checkpoint import load_model_checkpoint, load_optimizer_state, model_checkpoint
from esper.shell.compiled import compile_count, compiled_steps
from esper.shell.data.taskdata import TaskData
from esper.shell.data_parallel import Replicas
from esper.shell.diagnostics import Diagnostics
from esper.shell.dist import Ranks
from esper.shell.epoch import seeds_finite, train_epoch, validate
from esper.shell.epoch_numbers import EpochLayout, EpochNumbers, LaunchedEpoch
from esper.shell.flops import FlopMeter
from esper.shell.memory import MemoryReading, read_memory, reset_peaks
from esper.shell.model import MorphogeneticModel
from esper.shell.nets.hosts import host_for
from esper.shell.optim_groups import param_groups, set_lrs, sync_optimizer
from esper.shell.run_config import RunConfig
from esper.shell.user_code import HostFactory, probe_sample, user_blueprints

# Generator streams (docs/runtime.md §2.5): SeedSequence([seed, 0, k]).
STREAM_DATA, STREAM_AUGMENT, STREAM_HOST = 2_000_001, 2_000_002, 2_000_005
STREAM_DROPOUT = 2_000_006  # every dropout mask of the host, on the run's device
STREAM_DIAG = 2_000_003  # sharpness directions (esper.shell.diagnostics), on the run's device


Controller = Callable[[heuristic.HeuristicState, heuristic.DecisionView, heuristic.HeuristicConfig],
                      tuple[heuristic.HeuristicState, FactoredAction, str]]


Decider = Callable[["Trainer", "PendingEpoch"], tuple[FactoredAction, str, list[Event]]]


class TrainingDiverged(RuntimeError):
    """Training diverged (exit 1): the governor panicked after its rollbacks were spent, a loss went
    non-finite with the governor off, or the run ended with non-finite metrics (status diverged)."""


def stream_seed(seed: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, 0, stream]).generate_state(1, np.uint64)[0])


def _generator(seed: int, stream: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(stream_seed(seed, stream))


@attrs.frozen
class PendingEpoch:
    """An epoch trained, validated and recorded, waiting for its controller's action."""

    epoch: int
    started: float
    numbers: EpochNumbers
    verdict: governor.Verdict
    view: LifecycleState
    masks: ActionMasks
    events: list[Event]
    memory: MemoryReading | None = None  # read after the fetch (esper.shell.memory)

    @property
    def rolled_back(self) -> bool:
        return self.verdict.kind == governor.VerdictKind.PANIC


@attrs.frozen
class EpochResult:
    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    action: FactoredAction
    reason: str
    rollback: bool
    events: tuple[Event, ...]
    metrics: EpochMetrics


class Trainer:
    """One run of `epochs` boundaries under the heuristic or static controller."""

    abort_event: GovernorAbort | None = None  # why the governor gave up, set before TrainingDiverged

    def __init__(self, cfg: RunConfig, data: TaskData, device: torch.device, *,
                 controller: Controller | None = None, lifecycle_config: LifecycleConfig | None = None,
                 decider: "Decider | None" = None, measure_fossils: bool = False, diagnostics: bool = True,
                 ranks: Ranks | None = None, host_factory: HostFactory | None = None,
                 catalogue: Catalogue | None = None) -> None:
        """`controller` and `lifecycle_config` replace the configured controller and the horizon's
        lifecycle defaults (scripted controllers in tests and experiments). A `decider` sees the
        whole pending epoch (a trained policy needs the numbers the heuristic's view leaves out);
        `measure_fossils` measures each fossil's contribution too (RL reward); `diagnostics=False`: no
        profile's; W `ranks`: data-parallel; the user's `host_factory` and `catalogue` (docs/lifecycle.md §7.4)."""
        self.decider, self.measure_fossils = decider, measure_fossils
        preset = data.preset
        self.cfg, self.data, self.preset, self.device = cfg, data, preset, device
        self.epochs = cfg.epochs or preset.epochs
        self.batch_size = cfg.batch_size or preset.batch_size
        self.max_batches = cfg.train_batches or preset.train_batches_per_epoch
        self.replicas = Replicas(ranks or Ranks(), self.batch_size)
        self.autocast = resolve_precision(cfg.precision, device)
        self.steps, self.recompiles = compiled_steps(cfg.compile, device, self.replicas.ranks), 0  # --compile
        # Determinism and the global RNG: once per run by the driver (esper.shell.process), not per env.
        self.data_gen = _generator(cfg.seed, STREAM_DATA, torch.device("cpu"))
        self.augment_gen = _generator(cfg.seed, STREAM_AUGMENT, device)
        self.dropout_gen = _generator(cfg.seed, STREAM_DROPOUT, device)
        self.lifecycle_cfg = lifecycle_config or preset.lifecycle_config(self.epochs, max_seeds=cfg.max_seeds)
        self._controller = controller
        enabled = set(cfg.slots) if cfg.slots else None
        self.model = self._new_model(enabled, host_factory, catalogue)
        self.rules: Rules = self.model.rules(self.lifecycle_cfg)
        self.state: LifecycleState = lifecycle.initial_state(self.model.topology, self.model.host.slot_specs, enabled)
        for entry in cfg.static_seeds:  # fixed seeds of a static baseline: fossils from epoch 0
            slot_id, blueprint = entry.split(":")
            self.state, _ = lifecycle.plant_fossil(self.state, slot_id, blueprint, self.rules)
        self.model.sync_to(self.state)
        self.optimizer = self._new_optimizer()
        self.lr_factor = 1.0  # the governor's: halved by each rollback
        self.schedule = cfg.lr_schedule or preset.lr_schedule  # esper.core.lr_schedule
        self.tracker_cfg = signals.TrackerConfig(plateau_min_gain=preset.plateau_gain)
        self.tracker = signals.TrackerState()
        self.heuristic_cfg = heuristic_config(cfg, preset, user_blueprints(self.model.catalogue))
        self.heuristic = heuristic.HeuristicState(topology=self.model.topology)
        self.governor_cfg = governor.GovernorConfig(random_guess_loss=data.random_guess_loss,
                                                    max_rollbacks=cfg.max_rollbacks)
        self.governor = governor.GovernorState()
        self.records: tuple[SeedRecord, ...] = ()
        self.flops = FlopMeter()  # training FLOPs, counted per structure × samples trained with it
        self.history: list[tuple[int, float, float]] = []  # (epoch, val_acc, val_loss)
        self.snapshot = self._take_snapshot() if cfg.governor else None
        self.diagnostics = self._diagnostics(diagnostics)

    # -- set-up helpers ------------------------------------------------------------------------

    def _new_model(self, enabled: set[str] | None, factory: HostFactory | None,
                   catalogue: Catalogue | None) -> MorphogeneticModel:
        """The host (own init stream; dropout from the run's; a user's from its factory) in an empty model."""
        cfg, preset = self.cfg, self.preset
        host_gen = _generator(cfg.seed, STREAM_HOST, torch.device("cpu"))
        host = factory.build(host_gen, probe_sample(self.data), self.dropout_gen) if factory else host_for(
            cfg.host or preset.host, host_gen, dropout_generator=self.dropout_gen,
            **host_overrides(self.data, cfg.host_width, host_given=cfg.host is not None))
        if factory is None and preset.topology != host.config.KIND:
            raise ConfigError(f"host {cfg.host} is {host.config.KIND}; task {preset.name} needs {preset.topology}")
        return MorphogeneticModel(host, run_seed=cfg.seed, lifecycle=self.lifecycle_cfg, catalogue=catalogue,
                                  enabled=enabled).to(self.device)

    def _diagnostics(self, enabled: bool) -> Diagnostics | None:
        """What `--profile` computes at this `--telemetry-level` (none in a PPO learning run's envs)."""
        return Diagnostics.for_run(self.cfg, self.data, _generator(self.cfg.seed, STREAM_DIAG, self.device),
                                   self.autocast, enabled=enabled)

    def _new_optimizer(self) -> torch.optim.Optimizer:
        cfg, preset = self.cfg, self.preset
        groups = param_groups(self.model, host_lr=self.base_lr[0], seed_lr=self.base_lr[1],
                              weight_decay=preset.weight_decay)
        if (cfg.optimizer or preset.optimizer) == "sgd":
            return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=preset.momentum)
        return torch.optim.AdamW(groups, lr=groups[0]["lr"], betas=preset.betas)

    @property
    def epoch(self) -> int:
        return self.state.epoch

    @property
    def base_lr(self) -> tuple[float, float]:
        """(host lr, seed lr) before the governor's factor and the schedule."""
        return self.cfg.host_lr or self.preset.host_lr, self.cfg.seed_lr or self.preset.seed_lr

    @property
    def samples_per_epoch(self) -> int:
        return samples_per_epoch(self.data.n_train, self.batch_size, self.max_batches)

    @property
    def controller(self) -> Controller:
        if self._controller is not None:
            return self._controller
        return heuristic.decide if self.cfg.controller == "heuristic" else heuristic.static_decide

    # -- the epoch ------------------------------------------------------------------------------

    def run_epoch(self) -> EpochResult:
        pending = self.begin_epoch()
        action, reason, events = self.decide(pending)
        return self.finish_epoch(pending, action, reason, events)

    def begin_epoch(self) -> "PendingEpoch":
        """Steps 0–5: train, validate, fetch, governor, tracker, record — up to the view a
        controller decides on. A vectorised controller calls this on every env, decides for all
        envs at once, then calls `finish_epoch` on each."""
        return self.collect_epoch(self.launch_epoch())

    def launch_epoch(self) -> "LaunchedEpoch":
        """Steps 0–2 without a host sync: on a GPU this only queues work on the current stream, so
        N envs launched one after another overlap until each `collect_epoch` fetches."""
        started, compiles = time.perf_counter(), compile_count()
        reset_peaks(self.device)
        self._schedule_lr()
        layout = EpochLayout.of(lifecycle.measurement_plan(self.state, fossil_contribution=self.measure_fossils))
        measured = layout.measured
        self.flops.add_epoch(self.model, self.data, self.samples_per_epoch, self.autocast)
        diag, ranks = self.diagnostics, self.replicas.ranks
        self.replicas.reseed({STREAM_AUGMENT: self.augment_gen, STREAM_DROPOUT: self.dropout_gen}, self.cfg.seed,
                             self.epoch)
        with diag.training(self.model) if diag else nullcontext() as probe:
            sums = train_epoch(self.model, self.optimizer, self.data, batch_size=self.batch_size,
                               data_gen=self.data_gen, augment_gen=self.augment_gen, measured=measured,
                               max_batches=self.max_batches, grad_clip=self.preset.grad_clip,
                               autocast=self.autocast, probe=probe, ranks=ranks,
                               forward=self.replicas.forward_module(self.model),
                               steps=None if diag and diag.hooks_forward else self.steps)
        finite = seeds_finite(self.model, sums)
        val = validate(self.model, self.data, layout.variants, batch_size=self.preset.eval_batch_size,
                       autocast=self.autocast, confusion=diag is not None and diag.confusion, ranks=ranks,
                       steps=self.steps)
        self.recompiles = compile_count() - compiles  # graphs dynamo compiled for this epoch
        return LaunchedEpoch(started, layout, sums, finite, val,
                             seed_params={slot: self.model.slot(slot).n_params() for slot in measured},
                             host_params=self.model.host_params,
                             diag=diag.device_tree(self.model, sums, val) if diag else None)

    def _schedule_lr(self) -> None:
        """This epoch's lr in every group: preset lr × the governor's factor × the schedule's s(e).
        Seed and fossil groups follow the host group's lr and seed_lr (`sync_optimizer`)."""
        scale = self.lr_factor * lr_schedule.lr_factor(self.schedule, min(self.epoch, self.epochs - 1),
                                                       self.epochs)
        set_lrs(self.optimizer, self.model, host_lr=self.base_lr[0] * scale, seed_lr=self.base_lr[1] * scale)

    def collect_epoch(self, launched: "LaunchedEpoch") -> "PendingEpoch":
        """Steps 3–5: the one device→host copy, governor, tracker, record."""
        epoch = self.state.epoch + 1
        numbers = launched.fetch()  # the one device→host copy
        memory = read_memory(self.device)  # allocator bookkeeping: no device sync
        events: list[Event] = []
        if self.diagnostics is not None:  # on this epoch's weights, before a rollback could replace them
            events += self.diagnostics.collect(epoch, self.model, numbers.diag, time.perf_counter() - launched.started)
        if self.cfg.governor:
            self.governor, verdict = governor.check(self.governor, numbers.train_loss, numbers.val_loss,
                                                    self.governor_cfg)
        else:
            verdict = governor.Verdict.ok()
            if not (math.isfinite(numbers.train_loss) and math.isfinite(numbers.val_loss)):
                # Nothing rolls back without the governor, and a NaN would poison the tracker's EMAs.
                raise TrainingDiverged(f"training diverged: train_loss={numbers.train_loss}, val_loss="
                                       f"{numbers.val_loss} at epoch {epoch} with the governor off (--no-governor)")
        if verdict.is_anomaly:
            events.append(verdict.anomaly_event(epoch, numbers.val_loss))
        if verdict.kind == governor.VerdictKind.PANIC:
            view, rollback_events = self._rollback(verdict, epoch, numbers.val_loss, numbers.val_acc)
            events += rollback_events
        else:
            self.tracker, tracker_events = signals.update(
                self.tracker, signals.EpochSignals(epoch=epoch, val_loss=numbers.val_loss, val_acc=numbers.val_acc,
                                                   train_loss=numbers.train_loss, train_acc=numbers.train_acc),
                self.tracker_cfg)
            events += tracker_events
            view = lifecycle.record(self.state, numbers.measurements(epoch))
        return PendingEpoch(epoch=epoch, started=launched.started, numbers=numbers, verdict=verdict, view=view,
                            masks=masks(view, self.rules), events=events, memory=memory)

    def decide(self, pending: "PendingEpoch") -> tuple[FactoredAction, str, list[Event]]:
        """Step 6: the configured (heuristic or static or scripted) controller's decision."""
        if self.decider is not None:
            return self.decider(self, pending)
        dview = heuristic.decision_view(pending.view, self.tracker, pending.masks, self.epochs, self.rules)
        self.heuristic, action, reason = self.controller(self.heuristic, dview, self.heuristic_cfg)
        events: list[Event] = list(heuristic.input_missing_events(dview)) if reason == "input_missing" else []
        return action, reason, events

    def finish_epoch(self, pending: "PendingEpoch", action: FactoredAction, reason: str,
                     decision_events: list[Event] | tuple[Event, ...] = ()) -> EpochResult:
        """Steps 7–10: apply the action, mirror it in the model, snapshot, telemetry values."""
        numbers, verdict, view, epoch = pending.numbers, pending.verdict, pending.view, pending.epoch
        events = [*pending.events, *decision_events, *self._apply(view, action)]
        if verdict.is_ok and self.cfg.governor:
            self.snapshot = self._take_snapshot()
        self.history.append((epoch, numbers.val_acc, numbers.val_loss))
        events += self._seed_metrics(view)
        self.records = summarize_seeds(events, self.records)
        metrics = self._epoch_metrics(epoch, numbers, action, reason, verdict, time.perf_counter() - pending.started)
        if pending.memory is not None:
            metrics = attrs.evolve(metrics, **attrs.asdict(pending.memory))
        return EpochResult(epoch, numbers.train_loss, numbers.train_acc, numbers.val_loss, numbers.val_acc, action,
                           reason, pending.rolled_back, tuple(events), metrics)

    def _apply(self, view: LifecycleState, action: FactoredAction) -> list[Event]:
        events: list[Event] = []
        self.state, step_events = lifecycle.apply_action(view, action, self.rules)
        events += step_events
        self.model.sync_to(self.state)
        sync_optimizer(self.optimizer, self.model)
        self.heuristic = heuristic.observe(self.heuristic, step_events, self.state.epoch, self.heuristic_cfg)
        if any(s.stage == Stage.FOSSILIZED and s.seed.epochs_in_stage == 0 for s in self.state.slots):
            self.tracker, changed = signals.structure_changed(self.tracker, "fossilized")
            events += changed
        return events

    # -- governor snapshot and rollback ---------------------------------------------------------

    def _take_snapshot(self) -> dict[str, Any]:
        return {"model": model_checkpoint(self.model, self.state, self.optimizer),
                "tracker": codec.encode(self.tracker), "heuristic": codec.encode(self.heuristic),
                "lr_factor": self.lr_factor}

    def restore_snapshot(self, snap: dict[str, Any]) -> LifecycleState:
        """Model, optimizer, tracker and heuristic from a snapshot (governor rollback, resume);
        returns the snapshot's lifecycle state for the caller to adopt or roll back from."""
        loaded = load_model_checkpoint(snap["model"], lifecycle=self.lifecycle_cfg, device=self.device,
                                       dropout_generator=self.dropout_gen)
        self.model = loaded.model
        self.optimizer = self._new_optimizer()
        load_optimizer_state(self.optimizer, loaded.optimizer_state)
        self.tracker = codec.decode(signals.TrackerState, snap["tracker"])
        self.heuristic = codec.decode(heuristic.HeuristicState, snap["heuristic"])
        return loaded.state

    def _rollback(self, verdict: governor.Verdict, epoch: int, val_loss: float,
                  val_acc: float) -> tuple[LifecycleState, list[Event]]:
        if governor.rollbacks_exhausted(self.governor, self.governor_cfg):
            self.abort_event = GovernorAbort(epoch=epoch, reason=verdict.reason or "panic",
                                             rollbacks=self.governor.rollbacks)
            raise TrainingDiverged(
                f"training diverged: governor panic {self.governor.rollbacks + 1} "
                f"({verdict.reason} val loss, epoch {epoch}) after {self.governor.rollbacks} rollbacks")
        snapshot_state = self.restore_snapshot(self.snapshot)
        self.governor = governor.record_rollback(self.governor)
        self.lr_factor *= self.governor_cfg.lr_factor_on_rollback
        blank = EpochMeasurements(epoch=epoch, val_acc=val_acc if np.isfinite(val_acc) else 0.0)
        view, events = lifecycle.rollback(snapshot_state, self.state, blank, self.rules)
        self.model.sync_to(view)
        self._schedule_lr()  # the halved factor, in every group the restored model still has
        self.heuristic = heuristic.observe(self.heuristic, events, epoch, self.heuristic_cfg)
        self.tracker, changed = signals.structure_changed(self.tracker, "rollback", epoch=epoch)
        culled = tuple(e.seed_id for e in events if getattr(e, "reason", None) == "governor_rollback"
                       and e.kind == "seed.culled")
        rollback = GovernorRollback(epoch=epoch, reason=verdict.reason or "panic", loss=val_loss,
                                    anomalies=verdict.consecutive, snapshot_epoch=snapshot_state.epoch,
                                    culled=culled, rollbacks=self.governor.rollbacks,
                                    max_rollbacks=self.governor_cfg.max_rollbacks, lr_factor=self.lr_factor)
        return view, [rollback, *events, *changed]

    # -- telemetry values ------------------------------------------------------------------------

    def _seed_metrics(self, view: LifecycleState) -> list[Event]:
        out: list[Event] = []
        for slot in view.slots:
            seed = slot.seed
            if seed is None or seed.stage not in (*LIVE, Stage.FOSSILIZED):
                continue
            out.append(SeedMetrics(epoch=view.epoch, slot=slot.slot_id, seed_id=seed.seed_id,
                                   stage=seed.stage, alpha=seed.alpha, epochs_in_stage=seed.epochs_in_stage,
                                   age=seed.age,
                                   grad_ratio=seed.grad_ratio, contribution=seed.contribution,
                                   shadow_gain=seed.shadow_gain,
                                   total_gain=view.val_acc - seed.acc_at_germination))
        return out

    def _epoch_metrics(self, epoch: int, numbers: EpochNumbers, action: FactoredAction, reason: str,
                       verdict: governor.Verdict, seconds: float) -> EpochMetrics:
        counts = self.model.param_counts()
        slots = tuple(SlotStatus(slot=s.slot_id, stage=s.stage,
                                 blueprint=s.seed.blueprint if s.seed else None,
                                 seed_id=s.seed.seed_id if s.seed else None,
                                 alpha=s.seed.alpha if s.seed else 0.0,
                                 contribution=s.seed.contribution if s.seed else None)
                      for s in self.state.slots if s.enabled)
        val_loss = numbers.val_loss
        return EpochMetrics(
            epoch=epoch, train_loss=numbers.train_loss, train_acc=numbers.train_acc, val_loss=val_loss,
            val_acc=numbers.val_acc, params=counts.total, seed_params=counts.live + counts.fossilized,
            lr_host=self.optimizer.param_groups[0]["lr"], action=str(action), reason=reason,
            epoch_s=seconds, samples_per_s=numbers.train_count / max(seconds, 1e-9),
            val_ppl=float(np.exp(min(val_loss, 50.0))) if self.preset.modality == "text" else None,
            live_seeds=sum(1 for s in self.state.slots if s.stage in LIVE),
            fossilized=sum(1 for s in self.state.slots if s.stage == Stage.FOSSILIZED),
            rollback=verdict.kind == governor.VerdictKind.PANIC, recompiles=self.recompiles, slots=slots)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """None = fp32. `auto` is bf16 on CUDA where supported, fp32 elsewhere (docs/runtime.md §2.5)."""
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


WIDTH_KEY = {"cnn": "width", "transformer": "d_model"}  # the host config field --host-width sets


def host_overrides(data: TaskData, width: int | None, *, host_given: bool = False) -> dict[str, Any]:
    """--host-width, and for text the tokenizer's real vocabulary (8,192 for a local BPE); a task
    derived from the data (`--task images`) gives its input shape and classes, and its blocks unless
    --host names the host."""
    out: dict[str, Any] = {}
    if data.preset.topology == "transformer":
        out["vocab_size"] = data.n_classes
    if data.preset.host_blocks is not None:
        out.update(input_shape=data.preset.input_shape, n_classes=data.preset.n_classes)
        if not host_given:
            out.update(n_blocks=data.preset.host_blocks[0], pool_layers=data.preset.host_blocks[1])
    if width is not None:
        out[WIDTH_KEY[data.preset.topology]] = width
    return out


def samples_per_epoch(n_train: int, batch_size: int, max_batches: int | None) -> int:
    """Images (or text windows) one epoch trains on: full batches, capped by --train-batches."""
    batches = n_train // batch_size
    return batch_size * (batches if max_batches is None else min(batches, max_batches))


def heuristic_config(cfg: RunConfig, preset: TaskPreset, user: tuple[str, ...] = ()) -> heuristic.HeuristicConfig:
    """The heuristic's knobs: the run's, falling back to the task preset's; `user` blueprints lead the rotation."""
    return heuristic.HeuristicConfig(
        max_seeds=cfg.max_seeds, plateau_epochs=cfg.plateau_epochs, user_blueprints=user,
        min_germinate_epoch=preset.min_germinate_epoch if cfg.min_germinate_epoch is None else cfg.min_germinate_epoch,
        germination=cfg.germination or preset.germination)
