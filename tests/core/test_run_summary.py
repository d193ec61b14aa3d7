"""`summarize_seeds` folds lifecycle events into one record per seed; `RunSummary` round-trips."""

import json

from esper.core import codec
from esper.core import events as ev
from esper.core.stages import Stage
from esper.core.summary import RunSummary, summarize_seeds


def germ(seed: str, epoch: int, blueprint: str = "norm") -> ev.SeedGerminated:
    return ev.SeedGerminated(slot=seed.split("#")[0], seed_id=seed, blueprint=blueprint, tempo=5,
                             curve="LINEAR", n_params=65, epoch=epoch)


def move(seed: str, a: Stage, b: Stage, epoch: int, reason: str = "gate") -> ev.StageChanged:
    return ev.StageChanged(slot=seed.split("#")[0], seed_id=seed, from_stage=a, to_stage=b, reason=reason,
                           epoch=epoch, previous_epochs_in_stage=1)


def metrics(seed: str, epoch: int, contribution: float | None) -> ev.SeedMetrics:
    return ev.SeedMetrics(epoch=epoch, slot=seed.split("#")[0], seed_id=seed, stage=Stage.BLENDING, alpha=0.5,
                          epochs_in_stage=1, age=3, contribution=contribution)


S = Stage
EVENTS: list[ev.Event] = [
    germ("late#0", 5, "conv_light"),
    move("late#0", S.GERMINATED, S.TRAINING, 5),
    ev.RunResumed(checkpoint="x", from_epoch=6),  # unrelated events are ignored
    germ("mid#1", 6),
    move("late#0", S.TRAINING, S.BLENDING, 9),
    metrics("late#0", 10, 0.02),
    metrics("late#0", 11, None),  # an unmeasured epoch keeps the last measurement
    move("mid#1", S.GERMINATED, S.TRAINING, 6),
    move("mid#1", S.TRAINING, S.CULLED, 12, "action"),
    ev.SeedCulled(slot="mid", seed_id="mid#1", reason="action", stage=S.TRAINING, age=6, contribution=None,
                  epoch=12),
    move("mid#1", S.CULLED, S.EMBARGOED, 13),  # cooling down does not change the recorded end
    move("late#0", S.BLENDING, S.PROBATIONARY, 14),
    move("late#0", S.PROBATIONARY, S.FOSSILIZED, 16),
    ev.SeedFossilized(slot="late", seed_id="late#0", contribution=0.015, n_params=65, age=11, epoch=16),
    germ("mid#2", 20, "attention"),
    move("mid#2", S.GERMINATED, S.TRAINING, 20),
    move("mid#2", S.TRAINING, S.BLENDING, 24),
    metrics("mid#2", 25, -0.01),
]


def test_records_follow_each_seed_to_its_fate():
    late, culled, live = summarize_seeds(EVENTS)
    assert (late.seed_id, late.blueprint, late.germinated_epoch, late.end_epoch, late.fate, late.stage,
            late.contribution) == ("late#0", "conv_light", 5, 16, "fossilized", "FOSSILIZED", 0.015)
    assert (culled.seed_id, culled.end_epoch, culled.fate, culled.stage, culled.contribution,
            culled.cull_reason) == ("mid#1", 12, "culled", "CULLED", None, "action")
    assert (live.seed_id, live.slot, live.end_epoch, live.fate, live.stage, live.contribution) == (
        "mid#2", "mid", None, "live", "BLENDING", -0.01)


def test_fold_is_pure_and_prefix_consistent():
    before = list(EVENTS)
    assert summarize_seeds(EVENTS) == summarize_seeds(iter(EVENTS))
    assert before == EVENTS
    early = summarize_seeds(EVENTS[:6])[0]
    assert early.fate == "live" and early.contribution == 0.02
    assert summarize_seeds([]) == ()


def test_fossil_without_a_final_measurement_keeps_the_last_one():
    events = [germ("late#0", 1), metrics("late#0", 4, 0.03),
              ev.SeedFossilized(slot="late", seed_id="late#0", contribution=None, n_params=65, age=5,
                                epoch=6)]
    (record,) = summarize_seeds(events)
    assert record.contribution == 0.03 and record.fate == "fossilized"


def test_run_summary_round_trips_through_json():
    summary = RunSummary(run_id="r", status="ok", task="synth-images", controller="heuristic", seed=0,
                         epochs=40, final_val_acc=0.61, best_val_acc=0.62, best_epoch=33, host_params=6418,
                         seed_params=130, wall_s=12.5, data_source={"preset": "synth-images"},
                         dropped={"console": 0}, seeds=summarize_seeds(EVENTS))
    data = json.loads(json.dumps(codec.encode(summary)))
    assert data["total_params"] == 6548 and len(data["seeds"]) == 3
    assert codec.decode(RunSummary, data) == summary
    assert (summary.count("fossilized"), summary.count("culled"), summary.count("live")) == (1, 1, 1)
