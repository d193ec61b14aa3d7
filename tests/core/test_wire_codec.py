"""The wire registry: names, levels, droppability, float encoding and `from_dict`."""

import json
import math
import re

from hypothesis import given
from hypothesis import strategies as st

from esper.core import events as ev
from esper.core import wire
from esper.core.stages import Stage


def test_every_event_class_has_a_wire_name_and_a_level():
    assert wire.EVENT_TYPES["seed.stage_changed"] is ev.StageChanged
    for kind, cls in wire.EVENT_TYPES.items():
        assert re.fullmatch(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+", kind), kind
        assert kind in wire.LEVELS, f"{cls.__name__} ({kind}) has no level in wire.LEVELS"
    assert set(wire.LEVELS) == set(wire.EVENT_TYPES)


def test_levels_and_parsing():
    assert wire.Level.parse("Normal") is wire.Level.NORMAL and wire.Profile.parse("research").budget == 0.25
    assert wire.level_of(ev.HostDestabilised(epoch=1, reason="x")) == wire.Level.NORMAL
    passing = ev.GateEvaluated(slot="s", seed_id=None, gate="G3", passed=True, reason=None, checks=())
    assert wire.level_of(passing) == wire.Level.DEBUG
    assert wire.level_of(ev.GovernorAbort(epoch=1, reason="x", rollbacks=3)) == wire.Level.MINIMAL
    assert wire.severity_of(ev.GovernorAbort(epoch=1, reason="x", rollbacks=3)) == "error"
    assert not wire.admits(wire.Level.OFF, wire.Profile.RESEARCH, ev.GovernorAbort(epoch=1, reason="x",
                                                                                     rollbacks=3))


def test_only_bulk_metrics_may_be_dropped():
    never = ["run.start", "run.end", "seed.germinated", "seed.stage_changed", "seed.gate_evaluated",
             "seed.culled", "governor.rollback", "checkpoint.saved", "telemetry.dropped"]
    assert not any(wire.droppable(k) for k in never)
    assert all(wire.droppable(k) for k in ("epoch.metrics", "seed.metrics", "diag.gradients", "ppo.update"))


def test_to_wire_encodes_enums_tuples_attrs_and_non_finite_floats():
    slot = ev.SlotStatus(slot="late", stage=Stage.BLENDING, alpha=1 / 3)
    assert wire.to_wire((slot, float("nan"), -math.inf, {"k": math.pi}, True, 3)) == [
        {"slot": "late", "stage": "BLENDING", "blueprint": None, "seed_id": None, "alpha": 0.3333333,
         "contribution": None}, "nan", "-inf", {"k": 3.141593}, True, 3]


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_wire_floats_keep_seven_significant_digits(x):
    y = json.loads(json.dumps(wire.to_wire(x)))
    assert y == float(f"{x:.7g}")
    assert math.isclose(y, x, rel_tol=1e-6, abs_tol=0.0) or x == 0.0


def test_from_dict_rebuilds_core_values():
    culled = ev.SeedCulled(slot="mid", seed_id="mid#2", reason="action", stage=Stage.BLENDING, age=4,
                           contribution=None, epoch=9)
    fields = json.loads(json.dumps(wire.event_fields(culled)))
    assert fields["stage"] == "BLENDING"
    assert wire.from_dict("seed.culled", fields) == culled
    retired = ev.SeedRetired(slot="mid", seed_id="mid#2", history=((Stage.GERMINATED, 1), (Stage.DORMANT, 9)),
                             cull_reason=None)
    assert wire.from_dict("seed.retired", json.loads(json.dumps(wire.event_fields(retired)))) == retired
