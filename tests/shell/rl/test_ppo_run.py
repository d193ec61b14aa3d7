"""The PPO shell end to end on CPU (docs/rl.md §10 items 13, 15, 16, 17; issue 6 acceptance): a real
rollout of N envs over the one epoch protocol, real updates, checkpoints, exact resume, rollback
isolation, PBRS telescoping on the stored buffer, and the trained policy driving an ordinary run."""

import csv
import json
import math
from pathlib import Path

import attrs
import pytest
import torch

from esper.core.rewards import pbrs_sum
from esper.core.rl_config import RLConfig
from esper.core.stats import pearson
from esper.shell.checkpoint import read_checkpoint, write_atomic
from esper.shell.cli import main
from esper.shell.driver import load_data, train
from esper.shell.rl.collect import collect_rollout
from esper.shell.rl.envs import ACTING_STREAM, SHUFFLE_STREAM, VecEnv, batch_generator
from esper.shell.rl.runner import build_learner, policy_dims, rl_config
from esper.shell.rl.update import ppo_update
from esper.shell.run_config import RunConfig

TINY = RunConfig(task="synth-images", controller="ppo", epochs=3, n_envs=2, episodes=4, train_size=256,
                 val_size=128, batch_size=64, device="cpu", telemetry_level="minimal", progress=False,
                 report=False)
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    return [load_data(TINY, CPU)]


def _rollout(data, rl: RLConfig, batch: int = 0, vec_hook=None):
    vec = VecEnv(TINY, data, [CPU], n_envs=rl.n_envs, batch=batch, epochs=TINY.epochs)
    learner = build_learner(policy_dims(vec), rl, TINY.seed, CPU)
    if vec_hook is not None:
        vec_hook(vec)
    buffer, _ = collect_rollout(vec, learner.policy, learner.norms.obs, rl,
                                batch_generator(TINY.seed, batch, ACTING_STREAM))
    return vec, learner, buffer


def _update(learner, buffer, rl, batch=0):
    return ppo_update(learner.policy, learner.optimizer, buffer, learner.norms, rl, update=batch,
                      shuffle=batch_generator(TINY.seed, batch, SHUFFLE_STREAM), device=CPU)


def test_the_first_minibatch_reproduces_the_rollout_and_later_ones_move(data):
    rl = RLConfig(n_envs=2, minibatch_envs=1, episodes=4)
    _, learner, buffer = _rollout(data, rl)
    before = [p.detach().clone() for p in learner.policy.parameters()]
    result, _ = _update(learner, buffer, rl)
    assert result.initial_logratio_max < 1e-4
    assert result.minibatches_done == rl.ppo_epochs * 2 and result.applied
    assert result.diagnostics["max_abs_ratio_dev"] > 1e-6  # the last minibatch saw moved parameters
    assert all(0.0 <= result.diagnostics["heads"][h]["clip_frac"] <= 1.0 for h in ("op", "slot"))
    assert any(not torch.equal(b, p) for b, p in zip(before, learner.policy.parameters(), strict=True))


def test_a_tiny_target_kl_stops_the_update_after_exactly_one_step(data):
    rl = RLConfig(n_envs=2, minibatch_envs=1, episodes=4, target_kl=1e-9)
    _, learner, buffer = _rollout(data, rl)
    result, _ = _update(learner, buffer, rl)
    assert (result.minibatches_done, result.stop_epoch, result.stop_minibatch) == (1, 0, 1)


def test_pbrs_telescopes_on_the_stored_buffer(data):
    rl = RLConfig(n_envs=2, episodes=4)
    _, _, buffer = _rollout(data, rl)
    potentials = torch.tensor(rl.potentials, dtype=torch.float64)
    steps = torch.arange(buffer.valid.shape[1], dtype=torch.float64)
    for i in range(2):
        assert buffer.terminal[i, -1] == 1.0 and buffer.valid[i].all()
        recomputed = pbrs_sum(buffer.stage_before[i], buffer.stage_after[i], buffer.valid[i].double(),
                              buffer.terminal[i].double(), potentials, rl.gamma)
        paid = (rl.gamma ** steps * buffer.components[i, :, 1].double()).sum()
        assert abs(float(recomputed)) < 1e-12  # a terminal episode telescopes to exactly 0
        assert abs(float(paid - recomputed)) < 1e-5  # what the runtime reward paid is that sum
    assert (buffer.stage_after[:, :-1] == buffer.stage_before[:, 1:]).all()  # x_t feeds step t+1


def test_a_rollback_in_one_env_leaves_the_others_bit_identical(data):
    rl = RLConfig(n_envs=2, episodes=4)
    _, _, clean = _rollout(data, rl)

    def poison_env0_after_first_epoch(vec):
        env0 = vec.envs[0]
        original = env0.trainer.finish_epoch

        def finish(pending, action, reason, events=()):
            result = original(pending, action, reason, events)
            if result.epoch == 1:
                with torch.no_grad():
                    next(env0.trainer.model.host.parameters()).fill_(math.nan)
            return result

        env0.trainer.finish_epoch = finish

    vec, _, poisoned = _rollout(data, rl, vec_hook=poison_env0_after_first_epoch)
    assert vec.envs[0].trainer.governor.rollbacks == 1
    assert poisoned.components[0, 1, 4] == -rl.governor_penalty  # the rollback step pays the penalty
    assert poisoned.valid[0].all(), "a rollback is an ordinary transition: nothing is discarded"
    for field in ("obs", "actions", "logp", "value", "reward", "stage_after"):
        assert torch.equal(getattr(poisoned, field)[1], getattr(clean, field)[1]), field


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _check_episode_records(run: Path, summary: dict, events: list[dict]) -> None:
    """episodes.csv: one row per episode, its FLOPs those rl.rollout_done carried; ppo.csv's means of them;
    rl_summary's correlation computed from them."""
    episodes, ppo = _rows(run / "episodes.csv"), _rows(run / "ppo.csv")
    assert [(int(r["update"]), int(r["env"])) for r in episodes] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    done = [e["fields"] for e in events if e["event"] == "rl.rollout_done"]
    assert [int(r["train_flops"]) for r in episodes] == [f for d in done for f in d["train_flops"]]
    assert all(int(r["train_flops"]) > 0 for r in episodes)
    for u, row in enumerate(ppo):
        mine = episodes[2 * u:2 * u + 2]
        for col in ("germinations", "culls", "train_flops"):
            assert float(row[f"mean_{col}"]) == pytest.approx(sum(float(r[col]) for r in mine) / 2)
        assert float(row["mean_return"]) == pytest.approx(sum(float(r["return"]) for r in mine) / 2, abs=1e-6)
    returns = [float(r["return"]) for r in episodes]
    corr = summary["return_correlation"]
    assert corr["episodes"] == 4
    for key in ("final_acc", "train_flops"):
        want = pearson(returns, [float(r[key]) for r in episodes])
        assert corr[key] == (None if math.isnan(want) else pytest.approx(want))


def test_end_to_end_finite_changes_the_policy_and_resumes_exactly(tmp_path):
    full = train(TINY, out=str(tmp_path / "full"))
    assert full["updates"] == 2 and full["episodes"] == 4
    events = [json.loads(line) for line in (tmp_path / "full" / "events.jsonl").read_text().splitlines()]
    updates = [e for e in events if e["event"] == "ppo.update"]
    assert len(updates) == 2
    assert all(math.isfinite(u["fields"][k]) for u in updates for k in ("loss", "value_loss", "policy_loss"))
    assert [e["event"] for e in events].count("rl.rollout_done") == 2
    end = [e for e in events if e["event"] == "rl.run_ended"]
    assert len(end) == 1 and end[0]["fields"]["status"] == "ok" and end[0]["fields"]["updates"] == 2
    assert end[0]["fields"]["final_return"] == pytest.approx(full["last_updates"][-1]["return"])
    _check_episode_records(tmp_path / "full", full, events)
    initial = build_learner((87, 3, 6), RLConfig(n_envs=2, episodes=4), TINY.seed, CPU).policy.state_dict()
    final = read_checkpoint(tmp_path / "full" / "policy.pt")["policy"]
    assert any(not torch.equal(initial[k], final[k]) for k in initial)

    train(TINY, out=str(tmp_path / "cut"), stop_after=1)
    # No --controller: the run directory's own config makes it a PPO run (the flag once was needed).
    assert main(["train", "--resume", str(tmp_path / "cut")]) == 0
    a = read_checkpoint(tmp_path / "full" / "checkpoints" / "update-00002.pt")["controller"]
    b = read_checkpoint(tmp_path / "cut" / "checkpoints" / "update-00002.pt")["controller"]
    assert all(torch.equal(a["policy"][k], b["policy"][k]) for k in a["policy"])
    assert a["norms"] == b["norms"] and a["counters"] == b["counters"] and a["history"] == b["history"]
    ppo_csv = [(tmp_path / run / "ppo.csv").read_text().splitlines() for run in ("full", "cut")]
    assert len(ppo_csv[0]) == 3 and ppo_csv[0] == ppo_csv[1]  # header + one row per update
    assert (tmp_path / "full" / "episodes.csv").read_bytes() == (tmp_path / "cut" / "episodes.csv").read_bytes()
    resumed = json.loads((tmp_path / "cut" / "rl_summary.json").read_text())
    assert resumed["return_correlation"] == full["return_correlation"]  # the episode log came back with the rest
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for key, state in a["optimizer"]["state"].items():
        assert all(torch.equal(state[n], b["optimizer"]["state"][key][n]) for n in state)


def test_a_checkpoint_from_before_the_episode_log_resumes_and_correlates_the_later_episodes(tmp_path):
    run = tmp_path / "run"
    train(TINY, out=str(run), stop_after=1)
    path = run / "checkpoints" / "update-00001.pt"
    data = read_checkpoint(path)
    del data["controller"]["episode_log"]  # as an esper before episodes.csv wrote it
    write_atomic(path, data)
    assert main(["train", "--resume", str(path)]) == 0  # a checkpoint file names its run's kind too
    assert json.loads((run / "rl_summary.json").read_text())["return_correlation"]["episodes"] == 2  # update 2's
    assert len((run / "episodes.csv").read_text().splitlines()) == 5  # the file still holds both updates'


def test_the_trained_policy_runs_a_network_and_evaluate_reports_it(tmp_path, capsys):
    learned = tmp_path / "learned"
    assert main(["train", "--controller", "ppo", "--task", "synth-images", "--epochs", "3", "--n-envs", "2",
                 "--episodes", "2", "--train-size", "256", "--val-size", "128", "--batch-size", "64",
                 "--device", "cpu", "--telemetry-level", "minimal", "--no-progress", "--out", str(learned)]) == 0
    assert (learned / "policy.pt").exists() and (learned / "rl_summary.json").exists()
    assert "return vs final accuracy r = " in capsys.readouterr().out  # the summary lines say how well it tracks
    assert {p.name for p in (learned / "report").iterdir()} == {"ppo.png", "report.png"}  # drawn at the end
    grown = tmp_path / "grown"
    assert main(["train", "--controller", "ppo", "--policy", str(learned), "--task", "synth-images", "--epochs", "3",
                 "--train-size", "256", "--val-size", "128", "--batch-size", "64", "--device", "cpu",
                 "--telemetry-level", "minimal", "--no-progress", "--out", str(grown)]) == 0
    summary = json.loads((grown / "summary.json").read_text())
    assert summary["controller"] == "ppo" and summary["epochs"] == 3
    capsys.readouterr()
    assert main(["evaluate", str(grown), "--device", "cpu", "--json"]) == 0
    assert "val_acc" in capsys.readouterr().out


def test_policy_without_ppo_and_a_missing_policy_are_usage_errors(tmp_path, capsys):
    assert main(["train", "--policy", str(tmp_path), "--controller", "heuristic"]) == 2
    assert "--policy needs --controller ppo" in capsys.readouterr().err
    assert main(["train", "--controller", "ppo", "--policy", str(tmp_path), "--device", "cpu",
                 "--train-size", "64", "--val-size", "64", "--out", str(tmp_path / "run")]) == 2
    assert "no trained policy" in capsys.readouterr().err


def test_evaluate_reports_a_learning_run(tmp_path, capsys):
    train(attrs.evolve(TINY, episodes=2), out=str(tmp_path / "learned"))
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "learned"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["controller"] == "ppo" and report["batch"] == 1 and len(report["history"]) == 1


def test_ppo_envs_take_the_presets_g2_threshold(data):
    tuned = [attrs.evolve(data[0], preset=attrs.evolve(data[0].preset, min_training_improvement=-0.005))]
    for source, expected in ((data, 0.005), (tuned, -0.005)):
        vec = VecEnv(TINY, source, [CPU], n_envs=2, batch=0, epochs=TINY.epochs)
        assert {env.trainer.lifecycle_cfg.min_training_improvement for env in vec} == {expected}


def test_a_crash_in_a_ppo_run_writes_its_traceback_in_the_run_directory(tmp_path, monkeypatch, capsys):
    from esper.shell.rl.runner import PPORun

    def crash(self, hub):
        raise RuntimeError("simulated rollout fault")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(PPORun, "step", crash)
    out = tmp_path / "ppo"
    assert main(["train", "--controller", "ppo", "--task", "synth-images", "--epochs", "3", "--n-envs", "2",
                 "--episodes", "2", "--train-size", "256", "--val-size", "128", "--batch-size", "64",
                 "--device", "cpu", "--telemetry-level", "minimal", "--no-progress", "--out", str(out)]) == 1
    assert capsys.readouterr().err.strip().endswith(f"traceback in {out / 'error.txt'}")
    assert "simulated rollout fault" in (out / "error.txt").read_text()
    assert not (tmp_path / "error.txt").exists()


def test_rl_settings_are_recorded_in_config_json_and_restored_on_resume(tmp_path, capsys):
    """A PPO run with `--rl.` settings: config.json holds the resolved RLConfig, the run builds its policy
    from it, and `--resume` restores it (a narrower policy only loads into the same widths); a resume may
    not change an RL setting."""
    run = tmp_path / "run"
    cfg = attrs.evolve(TINY, rl={"hidden": 16, "head_hidden": 8, "lr": 1e-3})
    train(cfg, out=str(run), stop_after=1)
    recorded = json.loads((run / "config.json").read_text())["config"]["rl"]
    assert recorded == json.loads(json.dumps(attrs.asdict(cfg.rl_config())))
    assert (recorded["hidden"], recorded["n_envs"], recorded["episodes"]) == (16, 2, 4)
    assert main(["train", "--controller", "ppo", "--resume", str(run), "--rl.lr", "0.01"]) == 2
    assert "--resume cannot change rl" in capsys.readouterr().err
    assert main(["train", "--controller", "ppo", "--resume", str(run), "--rl.lr", "0.001"]) == 0  # as recorded
    saved = read_checkpoint(run / "policy.pt")
    assert (saved["rl"]["hidden"], saved["rl"]["lr"]) == (16, 1e-3)
    assert saved["policy"]["features.0.weight"].shape[0] == 16


def test_checkpoint_every_counts_updates_in_a_ppo_run_and_defaults_to_ten(tmp_path):
    """Issue 15, defect 8: `--checkpoint-every` was ignored (fixed at 10), so a short run killed
    mid-way had nothing to resume."""
    assert rl_config(TINY).checkpoint_every == 10  # not given: docs/rl.md §8's default
    assert rl_config(attrs.evolve(TINY, checkpoint_every=1)).checkpoint_every == 1
    train(attrs.evolve(TINY, checkpoint_every=1), out=str(tmp_path / "run"))
    saved = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("update-*.pt"))
    assert saved == ["update-00001.pt", "update-00002.pt"]
    first = read_checkpoint(tmp_path / "run" / "checkpoints" / "update-00001.pt")
    assert first["progress"]["update"] == 1


def test_an_interrupt_inside_an_update_checkpoints_the_batch_before_it(tmp_path, monkeypatch):
    """Issue 15, defect 1 for PPO: the update trains the policy in place, so an interrupt after its
    optimizer steps (and before the batch is counted) saved the moved weights as the batch before."""
    from esper.shell.rl import runner

    train(TINY, out=str(tmp_path / "whole"), stop_after=1)  # its update-00001.pt is the boundary

    def update_then_interrupt(*args, **kwargs):
        result = ppo_update(*args, **kwargs)
        if kwargs["update"] == 1:
            raise KeyboardInterrupt  # the second batch's update has stepped the optimizer
        return result

    monkeypatch.setattr(runner, "ppo_update", update_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(TINY, out=str(tmp_path / "cut"))
    a = read_checkpoint(tmp_path / "whole" / "checkpoints" / "update-00001.pt")["controller"]
    b = read_checkpoint(tmp_path / "cut" / "checkpoints" / "update-00001.pt")["controller"]
    assert all(torch.equal(a["policy"][k], b["policy"][k]) for k in a["policy"])
    assert a["counters"] == b["counters"] and a["history"] == b["history"]
    for key, state in a["optimizer"]["state"].items():
        assert all(torch.equal(state[n], b["optimizer"]["state"][key][n]) for n in state)
