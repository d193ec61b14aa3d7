"""Memory telemetry (docs/runtime.md §4.3): host RSS in every epoch.metrics of every profile, the CUDA
allocator's per-epoch peaks on CUDA only, and the schema accepts both."""

import json
import mmap

import pytest
import torch

from esper.core.events import EpochMetrics
from esper.shell import memory
from esper.shell.cli import main
from esper.shell.telemetry.schema import load_schema, validate

SMALL = ["--train-size", "256", "--val-size", "128", "--batch-size", "64", "--no-progress"]
CUDA_FIELDS = ("cuda_peak_allocated_mb", "cuda_peak_reserved_mb")


def epoch_records(out) -> list[dict]:
    records = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    return [r for r in records if r["event"] == EpochMetrics.kind]


@pytest.mark.parametrize("profile", ["minimal", "research"])
def test_a_cpu_run_reports_host_rss_every_epoch_and_no_cuda_numbers(tmp_path, profile):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "2", "--out", str(out), "--profile", profile, *SMALL]) == 0
    records, schema = epoch_records(out), load_schema()
    assert [r["fields"]["epoch"] for r in records] == [1, 2]
    for record in records:
        fields = record["fields"]
        assert validate(record, schema) == []
        assert fields["host_rss_mb"] > 0 and fields["host_peak_rss_mb"] >= fields["host_rss_mb"]
        assert all(fields.get(name) is None for name in CUDA_FIELDS)


def test_host_numbers_are_the_process_own():
    # 64 MiB of fresh, written pages (an anonymous mmap: a malloc could reuse freed pages already resident).
    ballast = mmap.mmap(-1, 64 * 2**20)
    before = memory.host_rss_mb()
    for offset in range(0, len(ballast), mmap.PAGESIZE):
        ballast[offset] = 1
    after = memory.host_rss_mb()
    ballast.close()
    assert before is not None and after is not None and after - before > 32
    # The kernel's high-water mark reads approximate (per-CPU) RSS counters: it may trail statm by a
    # few pages (CI saw 0.15 MiB), never by the 64 MiB ballast.
    assert memory.host_peak_rss_mb() >= after - 1.0
    reading = memory.read_memory(torch.device("cpu"))
    assert reading.host_rss_mb is not None and reading.host_peak_rss_mb >= reading.host_rss_mb
    assert reading.cuda_peak_allocated_mb is None and reading.cuda_peak_reserved_mb is None


def test_cuda_path_resets_at_launch_and_reads_the_allocator_peaks(monkeypatch):
    calls: list[tuple[str, object]] = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d=None: calls.append(("reset", d)))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d=None: 3 * 2**30)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda d=None: 5 * 2**29)
    device = torch.device("cuda", 0)
    memory.reset_peaks(device)
    memory.reset_peaks(torch.device("cpu"))
    assert calls == [("reset", device)]
    reading = memory.read_memory(device)
    assert (reading.cuda_peak_allocated_mb, reading.cuda_peak_reserved_mb) == (3072.0, 2560.0)
    assert reading.host_peak_rss_mb > 0


@pytest.mark.gpu
def test_a_cuda_run_reports_the_allocator_peaks(tmp_path):
    if not torch.cuda.is_available():
        pytest.fail("the gpu marker needs a CUDA device (make test-gpu runs on the device machine)")
    out = tmp_path / "run"
    assert main(["train", "--epochs", "2", "--out", str(out), "--device", "cuda", *SMALL]) == 0
    records, schema = epoch_records(out), load_schema()
    assert len(records) == 2
    for record in records:
        fields = record["fields"]
        assert validate(record, schema) == []
        assert fields["host_rss_mb"] > 0
        assert 0 < fields["cuda_peak_allocated_mb"] <= fields["cuda_peak_reserved_mb"]


def test_a_lagging_high_water_mark_never_reports_a_peak_below_the_current_rss(monkeypatch):
    # CI once read ru_maxrss 0.15 MiB under statm's current RSS: the peak must be at least the current value.
    monkeypatch.setattr(memory, "host_rss_mb", lambda: 1e9)
    assert memory.host_peak_rss_mb() == 1e9
    monkeypatch.setattr(memory, "host_rss_mb", lambda: None)
    assert 0 < memory.host_peak_rss_mb() < 1e9
