"""`summary.json` as a value (docs/runtime.md §4.6): `RunSummary`, `SeedRecord`, and the fold that
builds the seed records from lifecycle events.

Pure: the shell supplies wall time and drop counts, and writes the file atomically.
"""

from collections.abc import Iterable
from typing import Any

import attrs

from esper.core import events as ev

FATES = ("fossilized", "culled", "live")


@attrs.frozen(kw_only=True)
class SeedRecord:
    """One seed's life: where, what, when it started and ended, and how it ended."""

    seed_id: str
    slot: str
    blueprint: str
    germinated_epoch: int
    end_epoch: int | None  # None while live
    fate: str  # fossilized | culled | live
    stage: str  # last stage seen (FOSSILIZED, CULLED, or the live stage)
    contribution: float | None  # last measured contribution
    n_params: int
    cull_reason: str | None = None


@attrs.frozen(kw_only=True)
class RunSummary:
    run_id: str
    status: str = attrs.field(validator=attrs.validators.in_(ev.RUN_STATUSES))
    task: str
    controller: str
    seed: int
    epochs: int
    final_val_acc: float | None
    best_val_acc: float | None
    best_epoch: int | None
    host_params: int
    seed_params: int
    wall_s: float
    data_source: dict[str, Any] = attrs.field(factory=dict)
    dropped: dict[str, int] = attrs.field(factory=dict)  # telemetry drops per backend
    seeds: tuple[SeedRecord, ...] = ()
    final_val_loss: float | None = None
    train_flops: int | None = None  # counted: FlopCounterMode per structure × samples trained with it

    @property
    def total_params(self) -> int:
        return self.host_params + self.seed_params

    def count(self, fate: str) -> int:
        return sum(1 for s in self.seeds if s.fate == fate)


def summarize_seeds(events: Iterable[ev.Event], start: Iterable[SeedRecord] = ()) -> tuple[SeedRecord, ...]:
    """Fold lifecycle events into one record per seed, in germination order.

    Reads SeedGerminated (birth), StageChanged (last stage), SeedMetrics (last measured
    contribution of a live seed), SeedFossilized and SeedCulled (fate, end epoch, the
    contribution measured before the end). Other events are ignored, so a whole run's event
    stream can be passed as is. `start` continues an earlier fold (a resumed run's records).
    """
    records: dict[str, SeedRecord] = {r.seed_id: r for r in start}
    for event in events:
        records = _fold(records, event)
    return tuple(records.values())


def _fold(records: dict[str, SeedRecord], event: ev.Event) -> dict[str, SeedRecord]:
    if isinstance(event, ev.SeedGerminated):
        born = SeedRecord(
            seed_id=event.seed_id, slot=event.slot, blueprint=event.blueprint,
            germinated_epoch=event.epoch, end_epoch=None, fate="live", stage="GERMINATED",
            contribution=None, n_params=event.n_params,
        )
        return {**records, event.seed_id: born}
    seed_id = getattr(event, "seed_id", None)
    if seed_id not in records:
        return records  # not a seed event, or a seed germinated before these events began
    update = _update(records[seed_id], event)
    return records if update is None else {**records, seed_id: update}


def _update(rec: SeedRecord, event: ev.Event) -> SeedRecord | None:
    if isinstance(event, ev.StageChanged):
        # After its fate a seed only cools down (EMBARGOED, RESETTING): keep the fate's stage.
        return attrs.evolve(rec, stage=event.to_stage.name) if rec.fate == "live" else None
    if isinstance(event, ev.SeedMetrics):
        if event.contribution is None:
            return None
        return attrs.evolve(rec, contribution=event.contribution)
    if isinstance(event, ev.SeedFossilized):
        return attrs.evolve(rec, fate="fossilized", stage="FOSSILIZED", end_epoch=event.epoch,
                            contribution=_last(event.contribution, rec.contribution))
    if isinstance(event, ev.SeedCulled):
        return attrs.evolve(rec, fate="culled", stage="CULLED", end_epoch=event.epoch,
                            cull_reason=event.reason,
                            contribution=_last(event.contribution, rec.contribution))
    return None


def _last(new: float | None, old: float | None) -> float | None:
    return old if new is None else new
