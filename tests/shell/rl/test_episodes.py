"""`esper.shell.rl.episodes` (docs/rl.md §9): episodes.csv rows, ppo.csv's per-update means, the return's
correlation with the outcome, and CSV appends that keep an older file's header."""

import csv
import math

import pytest
import torch

from esper.core.stats import pearson
from esper.shell.rl import episodes as ep
from esper.shell.rl.ddppo import EnvFacts

FACTS = [EnvFacts(germinations=2, fossilizations=1, culls=1, rollbacks=0, seed_param_share=0.1, train_flops=100),
         EnvFacts(germinations=0, fossilizations=0, culls=0, rollbacks=1, seed_param_share=0.0, train_flops=40)]


def test_episode_returns_sum_the_kept_prefix_only():
    reward = torch.tensor([[1.0, 2.0, 4.0], [0.5, 8.0, 16.0]])
    valid = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert ep.episode_returns(reward, valid) == [7.0, 0.5]


def test_episode_rows_pair_each_envs_facts_with_its_return_and_accuracy():
    rows = ep.episode_rows(3, FACTS, [0.25, -0.5], [0.75, 0.5])
    assert [tuple(r[c] for c in ep.EPISODE_COLUMNS) for r in rows] == [(3, 0, 0.25, 0.75, 100, 2, 1, 1),
                                                                  (3, 1, -0.5, 0.5, 40, 0, 0, 0)]
    with pytest.raises(ValueError, match="2 envs' facts, 1 returns"):
        ep.episode_rows(3, FACTS, [0.25], [0.75, 0.5])


def test_batch_means_are_per_episode():
    assert ep.batch_means(FACTS) == {"mean_germinations": 1.0, "mean_culls": 0.5, "mean_train_flops": 70.0}


def test_return_correlation_over_the_finite_episodes():
    log = [{"return": g, "final_acc": a, "train_flops": f}
           for g, a, f in ((0.1, 0.5, 10), (0.3, 0.6, 30), (0.2, 0.7, 25), (math.nan, 0.9, 5), (0.4, math.inf, 1))]
    corr = ep.return_correlation(log)
    assert corr["episodes"] == 3  # the NaN return and the infinite accuracy are left out
    assert corr["final_acc"] == pytest.approx(pearson([0.1, 0.3, 0.2], [0.5, 0.6, 0.7]))
    assert corr["train_flops"] == pytest.approx(pearson([0.1, 0.3, 0.2], [10, 30, 25]))
    assert ep.describe_correlation(corr) == (f"return vs final accuracy r = {corr['final_acc']:+.2f}, vs train FLOPs "
                                          f"r = {corr['train_flops']:+.2f} (over 3 episodes)")


def test_an_undefined_correlation_is_null():
    two = [{"return": 0.1, "final_acc": 0.5, "train_flops": 1}, {"return": 0.2, "final_acc": 0.4, "train_flops": 2}]
    assert ep.return_correlation(two) == {"final_acc": None, "train_flops": None, "episodes": 2}
    same_flops = [{"return": g, "final_acc": g, "train_flops": 7} for g in (0.1, 0.2, 0.4)]
    assert ep.return_correlation(same_flops) == {"final_acc": pytest.approx(1.0), "train_flops": None, "episodes": 3}
    assert ep.describe_correlation(ep.return_correlation(two)).startswith("return vs final accuracy r = n/a,")


def test_append_rows_starts_a_file_then_appends_under_its_header(tmp_path):
    path = tmp_path / "t.csv"
    ep.append_rows(path, ("a", "b"), [{"a": 1, "b": 2}])
    ep.append_rows(path, ("a", "b"), [{"a": 3, "b": 4}, {"a": 5, "b": 6}])
    assert path.read_bytes() == b"a,b\r\n1,2\r\n3,4\r\n5,6\r\n"


def test_append_rows_keeps_an_older_files_header(tmp_path):
    path = tmp_path / "ppo.csv"
    path.write_text("update,mean_return\r\n1,0.5\r\n", newline="")  # written before mean_culls existed
    ep.append_rows(path, ("update", "mean_return", "mean_culls"), [{"update": 2, "mean_return": 0.25, "mean_culls": 1}])
    with path.open(newline="") as f:
        assert list(csv.reader(f)) == [["update", "mean_return"], ["1", "0.5"], ["2", "0.25"]]
