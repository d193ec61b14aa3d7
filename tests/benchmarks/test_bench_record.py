"""benchmarks/_record.py: the record every benchmark writes (device name, versions, command line)."""

import json
import platform
import re
import sys
from pathlib import Path

import _record
import torch


def test_the_record_names_device_versions_command_and_numbers(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["benchmarks/bench_x.py", "--device", "cpu", "--out", str(tmp_path)])
    path = _record.write_record("bench_x", "cpu", {"ratio": 0.9, "where": tmp_path}, {"rows": [1, 2]}, tmp_path)
    assert path.parent == tmp_path
    assert re.fullmatch(r"bench_x-cpu-\d{8}T\d{6}Z\.json", path.name)
    assert f"wrote {path}" in capsys.readouterr().out
    record = json.loads(path.read_text())
    assert record["benchmark"] == "bench_x"
    assert record["device"] == "cpu" and record["device_name"] == _record.cpu_model()
    assert record["python"] == platform.python_version() and record["torch"] == torch.__version__
    assert re.fullmatch(r"\d+\.\d+.*", record["esper"])
    assert record["command"].endswith(f"benchmarks/bench_x.py --device cpu --out {tmp_path}")
    assert record["summary"] == {"ratio": 0.9, "where": str(tmp_path)}  # a Path leaf becomes its string
    assert record["results"] == {"rows": [1, 2]}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["time_utc"])


def test_the_cpu_model_comes_from_cpuinfo_else_platform(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6338\n")
    assert _record.cpu_model(cpuinfo) == "Intel(R) Xeon(R) Gold 6338"
    fallback = platform.processor() or platform.machine() or "unknown"
    assert _record.cpu_model(tmp_path / "missing") == fallback
    cpuinfo.write_text("processor\t: 0\n")  # some ARM kernels give no model name
    assert _record.cpu_model(cpuinfo) == fallback


def test_a_cuda_record_names_the_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert _record.device_name("cuda") == "NVIDIA H100 80GB HBM3"
    assert _record.device_name(torch.device("cpu")) == _record.cpu_model()


def test_every_benchmark_writes_its_record_through_the_shared_writer():
    benches = sorted(Path(_record.__file__).parent.glob("bench_*.py"))
    assert len(benches) >= 6
    for path in benches:
        source = path.read_text()
        imported = re.search(r"^from _record import (.+)$", source, re.MULTILINE)
        names = set(imported[1].replace(" ", "").split(",")) if imported else set()
        assert {"add_out_argument", "write_record"} <= names, path.name
        assert f'write_record("{path.stem}"' in source, path.name
