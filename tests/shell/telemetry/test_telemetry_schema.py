"""Schema v1: every event kind survives event → JSONL line → JSON → `from_dict` unchanged."""

import json
import math

from telemetry_samples import epoch_metrics

from esper.core import wire
from esper.shell.telemetry import JsonlBackend, TelemetryHub, read_records
from esper.shell.telemetry.schema import build_schema, load_schema, validate


def test_samples_cover_every_registered_kind(samples):
    assert {e.kind for e in samples} == set(wire.EVENT_TYPES)


def test_round_trip_through_jsonl_and_schema(tmp_path, samples):
    path = tmp_path / "events.jsonl"
    with TelemetryHub("run-1", level="debug", profile="research", backends=[JsonlBackend(path)]) as hub:
        for event in samples:
            assert hub.emit(event) is not None
    schema = load_schema()
    records = list(read_records(path))
    assert [r["seq"] for r in records] == list(range(len(samples)))
    for record, event in zip(records, samples, strict=True):
        assert validate(record, schema) == [], record["event"]
        assert record["event"] == event.kind and record["run_id"] == "run-1"
        assert wire.from_dict(record["event"], record["fields"]) == event


def test_one_line_per_event_and_compact(tmp_path, samples):
    path = tmp_path / "e.jsonl"
    with TelemetryHub("r", level="debug", profile="research", backends=[JsonlBackend(path)]) as hub:
        hub.emit_all(samples)
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == len(samples) + 1
    assert all(b"\n" not in line and line.startswith(b'{"schema_version":1,') for line in lines[:-1])


def test_shipped_schema_is_the_derived_one():
    assert load_schema() == build_schema()


def test_non_finite_floats_are_strings_and_decode_back(tmp_path):
    event = epoch_metrics(val_loss=float("nan"), train_loss=float("inf"), epoch_s=-float("inf"))
    path = tmp_path / "e.jsonl"
    with TelemetryHub("r", backends=[JsonlBackend(path)]) as hub:
        hub.emit(event)
    (record,) = read_records(path)
    assert validate(record, load_schema()) == []
    fields = record["fields"]
    assert (fields["val_loss"], fields["train_loss"], fields["epoch_s"]) == ("nan", "inf", "-inf")
    back = wire.from_dict("epoch.metrics", fields)
    assert math.isnan(back.val_loss) and back.train_loss == math.inf and back.epoch_s == -math.inf


def test_floats_carry_seven_significant_digits(tmp_path):
    path = tmp_path / "e.jsonl"
    with TelemetryHub("r", backends=[JsonlBackend(path)]) as hub:
        hub.emit(epoch_metrics(val_acc=0.123456789, lr_host=1.0 / 3.0))
    line = path.read_text()
    assert '"val_acc":0.1234568' in line and '"lr_host":0.3333333' in line


def test_validator_catches_bad_records(tmp_path, samples):
    path = tmp_path / "e.jsonl"
    with TelemetryHub("r", backends=[JsonlBackend(path)]) as hub:
        hub.emit(epoch_metrics())
    good = next(read_records(path))
    schema = load_schema()

    def broken(change) -> list[str]:
        record = json.loads(json.dumps(good))
        change(record)
        return validate(record, schema)

    assert broken(lambda r: r["fields"].pop("val_acc"))  # required field missing
    assert broken(lambda r: r["fields"].__setitem__("val_acc", "high"))  # float as a word
    assert broken(lambda r: r["fields"].__setitem__("params", 1.5))  # int field holding a float
    assert broken(lambda r: r.__setitem__("extra", 1))  # unknown top-level key
    assert broken(lambda r: r.__setitem__("schema_version", 2))
    assert broken(lambda r: r.__setitem__("seq", -1))
    assert broken(lambda r: r.__setitem__("time", "yesterday"))
    assert broken(lambda r: r["fields"]["slots"][0].__setitem__("stage", "SHADOWING"))
    assert not broken(lambda r: r["fields"].__setitem__("new_optional_field", 1))  # v1 may grow


def test_from_dict_ignores_unknown_fields_and_rejects_unknown_kinds():
    fields = wire.event_fields(epoch_metrics())
    assert wire.from_dict("epoch.metrics", {**fields, "added_later": 3}) == epoch_metrics()
    for bad in (("no.such_kind", fields), ("epoch.metrics", {"epoch": 1})):
        try:
            wire.from_dict(*bad)
        except wire.WireError:
            continue
        raise AssertionError(f"{bad[0]} decoded")
