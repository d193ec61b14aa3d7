"""benchmarks/run_all.py (`make bench-gpu`): tiny injected steps on CPU, never the real benchmarks."""

import json
import time
from pathlib import Path

import pytest
import run_all
from run_all import Step

RECORD = ("import json, sys; out = sys.argv[1]; "
          "json.dump({'benchmark': 'bench_epoch', 'summary': {'compile_mode': 'reduce-overhead', 'tasks': "
          "{'cifar10': {'esper_static_vs_plain_eager': 0.85, 'plain_compiled_vs_plain_eager': 1.5, "
          "'counterfactual_vs_plain': 1.9, 'counterfactual_compiled_vs_plain': 1.2}}}}, "
          "open(out + '/bench_epoch-cpu-1.json', 'w'))")
FAIL = "import sys; print('collected 3 items'); sys.stderr.write('Traceback: boom\\n'); sys.exit(3)"
# A step that starts a child of its own and hangs: the timeout must kill both.
HANG = ("import subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        "open(sys.argv[1], 'w').write(str(child.pid)); time.sleep(60)")


def run(tmp_path: Path, capsys, steps: list[Step], *flags: str) -> tuple[int, dict]:
    code = run_all.main(["--device", "cpu", "--out", str(tmp_path / "results"), *flags], steps=steps)
    return code, json.loads(capsys.readouterr().out)  # stdout is the one JSON summary, nothing else


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_a_failing_and_a_hanging_step_are_recorded_and_the_others_still_run(tmp_path, capsys):
    pid_file = tmp_path / "child.pid"
    steps = [Step("fails", ("-c", FAIL), 30), Step("hangs", ("-c", HANG, str(pid_file)), 1.5),
             Step("bench_epoch", ("-c", RECORD, "{out}"), 30)]
    started = time.perf_counter()
    code, summary = run(tmp_path, capsys, steps)
    assert time.perf_counter() - started < 20
    assert code == 1 and not summary["ok"] and summary["failed"] == ["fails", "hangs"]
    fails, hangs, epoch = summary["steps"]
    assert fails["rc"] == 3 and not fails["timed_out"]
    assert "Traceback: boom" in fails["stderr_tail"] and "collected 3 items" in fails["stdout_tail"]
    assert hangs["timed_out"] and hangs["rc"] != 0 and 1.5 <= hangs["seconds"] < 10
    child = int(pid_file.read_text())
    deadline = time.perf_counter() + 5
    while alive(child) and time.perf_counter() < deadline:  # SIGKILL is delivered asynchronously
        time.sleep(0.05)
    assert not alive(child), "the step's own child outlived its timeout"
    assert epoch["rc"] == 0 and epoch["numbers"]["tasks"]["cifar10"]["esper_static_vs_plain_eager"] == 0.85
    [record] = epoch["records"]
    assert Path(record).parent == tmp_path / "results" and Path(record).exists()  # moved into the results
    assert summary["device"] == "cpu" and summary["python"] and summary["torch"] and summary["esper"]
    written = json.loads(Path(summary["path"]).read_text())
    assert written == summary and Path(summary["path"]).name.startswith("bench-cpu-")


def test_the_targets_are_stated_with_their_measured_values(tmp_path, capsys):
    _, summary = run(tmp_path, capsys, [Step("bench_epoch", ("-c", RECORD, "{out}"), 30)])
    assert summary["ok"] and summary["failed"] == [] and summary["skipped"] == []
    epoch, ro, cf = summary["targets"]
    assert epoch["measured"] == {"cifar10": 0.85} and epoch["bound"] == ">= 0.8" and epoch["met"] is True
    assert ro["measured"] == {"cifar10": 1.5} and ro["met"] is False
    assert cf["measured"] == {"cifar10": 1.2} and cf["met"] is True  # the compiled pass: a CUDA run's
    assert "counterfactual_compiled" in cf["source"]


def test_targets_without_bench_epoch_are_unmeasured_not_met():
    assert [t["met"] for t in run_all.gpu_targets([])] == [None, None, None]
    eager = {"benchmark": "bench_epoch", "summary": {"compile_mode": None, "tasks": {
        "cifar10": {"esper_static_vs_plain_eager": 0.7, "plain_compiled_vs_plain_eager": None,
                    "counterfactual_vs_plain": 1.4},
        "fashion-mnist": {"esper_static_vs_plain_eager": 0.9, "counterfactual_vs_plain": 1.6}}}}
    epoch, ro, cf = run_all.gpu_targets([eager])
    assert epoch["measured"] == {"cifar10": 0.7, "fashion-mnist": 0.9} and epoch["met"] is False  # every task
    assert ro["met"] is None  # no reduce-overhead row: not measured, not "not met"
    assert cf["measured"] == {"cifar10": 1.4, "fashion-mnist": 1.6} and cf["met"] is False


def test_a_spent_budget_skips_the_remaining_steps(tmp_path, capsys):
    code, summary = run(tmp_path, capsys, [Step("a", ("-c", "pass"), 30)], "--budget-s", "1")
    assert code == 1 and summary["skipped"] == ["a"] and "budget" in summary["steps"][0]["skipped"]


def test_only_runs_the_named_steps_and_refuses_unknown_ones(tmp_path, capsys):
    steps = [Step("a", ("-c", "pass"), 30), Step("b", ("-c", "import sys; sys.exit(1)"), 30)]
    code, summary = run(tmp_path, capsys, steps, "--only", "a")
    assert code == 0 and [s["name"] for s in summary["steps"]] == ["a"]
    assert run_all.main(["--device", "cpu", "--only", "nope", "--out", str(tmp_path)], steps=steps) == 2
    assert "unknown step(s) nope" in capsys.readouterr().err


def test_the_gpu_tests_report_their_counts(tmp_path):
    (tmp_path / "junit.xml").write_text('<testsuites><testsuite name="pytest" errors="1" failures="2" skipped="1" '
                                        'tests="9" time="3.0"/></testsuites>')
    assert run_all.test_counts(tmp_path / "junit.xml") == {"passed": 5, "failed": 2, "errors": 1, "skipped": 1}


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_the_default_steps_run_every_benchmark_on_the_device(device):
    steps = run_all.default_steps(device)
    benches = {p.stem for p in Path(run_all.__file__).parent.glob("bench_*.py")}
    assert {s.name for s in steps if s.name.startswith("bench_")} == benches
    for step in steps:
        if step.name.startswith("bench_"):
            assert (Path(run_all.ROOT) / step.argv[0]).exists()
            assert step.argv[1:3] == ("--device", "{device}") and step.argv[-2:] == ("--out", "{out}")
    assert ("gpu tests" in {s.name for s in steps}) == (device == "cuda")
    assert steps[0].name == "bench_epoch"  # the targets' source runs first
