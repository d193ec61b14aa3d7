"""The codec writes what the hand-written `to_dict` methods wrote, byte for byte, reads it back, and
rejects malformed records with the errors the methods raised."""

import json
import math
from typing import Any

import attrs
import pytest
import torch
from codec_samples import GOLDEN, samples

from esper.core import codec
from esper.core.errors import HostConfigError, LifecycleError
from esper.core.governor import GovernorConfig, GovernorState
from esper.core.running_stats import RunningStats
from esper.core.seed import LifecycleState, SeedState
from esper.core.summary import RunSummary
from esper.shell.nets.hosts import CNNHostConfig, HostConfig, TransformerHostConfig, host_config

OLD = json.loads(GOLDEN.read_text(encoding="utf-8"))
# Fields typed `Any` are decoded by the telemetry wire (its hooks know what they hold), not here.
ANY_FIELDS = {"event.ActionRejected", "event.GateEvaluated"}
# Optional fields added after the fixture was written: the encoding appends them at their defaults
# (attrs field order), and the old record decodes to those defaults.
ADDED_SINCE = {"event.EpochMetrics": dict.fromkeys(
    ("host_rss_mb", "host_peak_rss_mb", "cuda_peak_allocated_mb", "cuda_peak_reserved_mb"))}


def same(a: Any, b: Any) -> bool:
    """Equal, reading tensors and NaN as their encodings do."""
    return json.dumps(codec.encode(a)) == json.dumps(codec.encode(b))


def test_every_class_the_methods_covered_has_a_sample() -> None:
    assert set(samples()) == set(OLD)
    assert len([n for n in OLD if not n.startswith("event.")]) == 28  # + Event: the 29 classes


@pytest.mark.parametrize("name", sorted(OLD))
def test_encode_writes_the_hand_written_record_byte_for_byte(name: str) -> None:
    value = samples()[name]
    if name == "event.ActionRejected":
        # The one change: an event's Op was its int (no file held it); now its name, as on the wire.
        assert json.loads(OLD[name])["action"]["op"] == 1
        assert codec.encode(value)["action"] == {"op": "GERMINATE", "slot": 1, "blueprint": 2, "tempo": 0}
        return
    expected = {**json.loads(OLD[name]), **ADDED_SINCE[name]} if name in ADDED_SINCE else None
    assert json.dumps(codec.encode(value)) == (OLD[name] if expected is None else json.dumps(expected))


@pytest.mark.parametrize("name", sorted(set(OLD) - ANY_FIELDS))
def test_decode_reads_the_old_record_back_to_the_value(name: str) -> None:
    value = samples()[name]
    back = codec.decode(type(value), json.loads(OLD[name]))
    assert type(back) is type(value) and same(back, value)
    if not isinstance(value, RunningStats) and "Normalisers" not in name and "Welch" not in name:
        assert back == value


def test_host_configs_are_tagged_and_a_union_dispatches_on_the_tag() -> None:
    for config in (host_config("cifar10"), host_config("tiny", backend="native")):
        data = codec.encode(config)
        assert next(iter(data)) == "kind" and data["kind"] == config.KIND
        assert codec.decode(HostConfig, data) == config
    with pytest.raises(HostConfigError, match="cannot read a 'cnn' record"):
        codec.decode(TransformerHostConfig, codec.encode(host_config("cifar10")))
    with pytest.raises(HostConfigError, match="'rnn' not in"):
        codec.decode(HostConfig, {"kind": "rnn"})
    with pytest.raises(HostConfigError):
        codec.decode(CNNHostConfig, {**codec.encode(host_config("cifar10")), "pool_layers": 2.0})


def test_malformed_records_raise_what_cls_kwargs_raised() -> None:
    good = codec.encode(GovernorConfig.for_classes(10))
    with pytest.raises(TypeError, match=r"no field\(s\) \['bogus'\]"):
        codec.decode(GovernorConfig, {**good, "bogus": 1})
    with pytest.raises(KeyError, match="random_guess_loss"):
        codec.decode(GovernorConfig, {k: v for k, v in good.items() if k != "random_guess_loss"})
    with pytest.raises(TypeError, match="must be a mapping"):
        codec.decode(GovernorConfig, [1, 2])
    with pytest.raises(TypeError):  # scalars are not coerced: "20" stays a string and fails the check
        codec.decode(GovernorConfig, {**good, "window": "20"})


def test_lifecycle_records_raise_lifecycle_error_from_the_innermost_class() -> None:
    state = samples()["LifecycleState"]
    data = codec.encode(state)
    data["slots"][2]["seed"]["stage"] = 3  # a code, not a name
    with pytest.raises(LifecycleError, match="bad seed record"):
        codec.decode(LifecycleState, data)
    with pytest.raises(LifecycleError, match="bad lifecycle record"):
        codec.decode(LifecycleState, {"topology": "cnn"})
    seed = codec.encode(samples()["SeedState"])
    with pytest.raises(LifecycleError, match="alpha"):  # the class's own invariant, unwrapped
        codec.decode(SeedState, {**seed, "alpha": 2.0})


def test_running_stats_are_lists_and_a_float_count_and_are_checked() -> None:
    stats = RunningStats(mean=torch.tensor([1.0, 2.0]), var=torch.tensor([0.5, 0.25]), count=torch.tensor(4.0))
    data = codec.encode(stats)
    assert data == {"mean": [1.0, 2.0], "var": [0.5, 0.25], "count": 4.0} and type(data["count"]) is float
    back = codec.decode(RunningStats, data)
    assert all(torch.equal(getattr(back, k), getattr(stats, k)) for k in ("mean", "var", "count"))
    assert back.mean.dtype == torch.float32
    with pytest.raises(ValueError, match="bad record"):
        codec.decode(RunningStats, {"mean": [0.0], "var": [0.0, 1.0], "count": 1})


def test_run_summary_writes_total_params_and_ignores_it_on_reading() -> None:
    summary = samples()["RunSummary"]
    data = codec.encode(summary)
    assert list(data)[-1] == "total_params" and data["total_params"] == summary.total_params
    assert codec.decode(RunSummary, {**data, "total_params": -1}) == summary


def test_tuples_nest_as_lists_and_enums_by_name_or_str_value() -> None:
    assert codec.encode(GovernorState(window=(1.0, 2.0))) == {"window": [1.0, 2.0], "consecutive": 0,
                                                              "rollbacks": 0}
    verdict = codec.encode(samples()["Verdict"])
    assert verdict["kind"] == "anomaly"
    seed = codec.encode(samples()["SeedState"])
    assert seed["curve"] == "SIGMOID" and seed["history"][0] == ["GERMINATED", 4]
    assert math.isnan(codec.encode(samples()["WelchResult"])["t"])


@attrs.frozen
class _Recorded:
    name: str
    added: int | None = attrs.field(default=None, metadata={codec.OMIT_IF_DEFAULT: True})


def test_a_field_marked_omit_if_default_is_absent_at_its_default_and_round_trips():
    assert codec.encode(_Recorded("a")) == {"name": "a"}  # a record written before the field: the same bytes
    assert codec.encode(_Recorded("a", 3)) == {"name": "a", "added": 3}
    for value in (_Recorded("a"), _Recorded("a", 3)):
        assert codec.decode(_Recorded, codec.encode(value)) == value
