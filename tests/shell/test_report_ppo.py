"""ppo.png's learning-curve panels (docs/runtime.md §8, issue 21): germinations and culls per update, and
the scatter of episode return against final accuracy with Pearson's r; older PPO runs (no episodes.csv, no
growth columns in ppo.csv) are still drawn."""

import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from esper.core.stats import pearson
from esper.shell.report import GROUP_COLOURS, PPO_PANELS, PPO_SIZE, SCATTER_CELL, ReportError, draw_ppo, write_report
from esper.shell.report_data import EPISODE_COLUMNS, PPO_OPTIONAL, Group, load_run, return_accuracy_r
from tests.shell.test_report import BLUE, _write_csv, check_pngs, has_colour, make_ppo_run

GROWTH = [title for title, _ in PPO_PANELS].index("germinations, culls / episode")


def _drawn(*runs: Path) -> list:
    """The axes of ppo.png for one group per run; the per-update panels in PPO_PANELS order, the scatter last."""
    groups = [Group(name=f"g{i}", runs=(load_run(run),), colour=GROUP_COLOURS[i]) for i, run in enumerate(runs)]
    fig = Figure(figsize=PPO_SIZE, layout="constrained")
    draw_ppo(fig, groups)
    axes = list(fig.axes)
    return [*axes[:SCATTER_CELL], *axes[SCATTER_CELL + 1:], axes[SCATTER_CELL]]


def test_the_scatter_shows_every_episode_and_titles_its_r(tmp_path):
    run = make_ppo_run(tmp_path / "ppo")
    episodes = load_run(run).episodes
    scatter = _drawn(run)[-1]
    points = np.concatenate([c.get_offsets() for c in scatter.collections])
    assert points.tolist() == np.column_stack([episodes["final_acc"], episodes["return"]]).tolist()
    r = pearson(episodes["return"].tolist(), episodes["final_acc"].tolist())
    assert r > 0.5  # the fixture's return rises with its accuracy
    assert f"(r = {r:+.2f}, n = 40)" in scatter.get_title()


def test_the_growth_panel_draws_the_mean_germinations_and_culls(tmp_path):
    run = make_ppo_run(tmp_path / "ppo")
    table = load_run(run).ppo
    growth = _drawn(run)[GROWTH]
    drawn = {line.get_label(): np.asarray(line.get_ydata()) for line in growth.lines}
    assert drawn.keys() == {"germinations", "culls"}
    assert drawn["germinations"].tolist() == pytest.approx(table["mean_germinations"].tolist())
    assert drawn["culls"].tolist() == pytest.approx(table["mean_culls"].tolist())


def test_several_groups_each_name_their_r_in_the_legend(tmp_path):
    axes = _drawn(make_ppo_run(tmp_path / "a", seed=0), make_ppo_run(tmp_path / "b", seed=1))
    labels = [t.get_text() for t in axes[-1].get_legend().get_texts()]
    assert [label.split(":")[0] for label in labels] == ["g0", "g1"]
    assert all(", n = 40" in label and "r = +" in label for label in labels)


def test_an_older_run_is_drawn_without_its_missing_panels(tmp_path):
    run = make_ppo_run(tmp_path / "old", old=True)
    loaded = load_run(run)
    assert loaded.episodes is None and not set(PPO_OPTIONAL) & loaded.ppo.keys()
    axes = _drawn(run)
    assert not axes[GROWTH].lines and [t.get_text() for t in axes[GROWTH].texts] == ["not in this ppo.csv"]
    assert not axes[-1].collections and [t.get_text() for t in axes[-1].texts] == ["no episodes.csv"]
    images = check_pngs(write_report(run), run / "report", {"ppo", "report"})
    assert has_colour(images["ppo"], BLUE)


def test_return_accuracy_r_pools_the_finite_episodes():
    a = {"return": np.array([0.1, 0.4, np.nan]), "final_acc": np.array([0.5, 0.7, 0.9])}
    b = {"return": np.array([0.2, 0.3]), "final_acc": np.array([np.inf, 0.6])}
    r, n = return_accuracy_r([a, b])
    assert n == 3 and r == pytest.approx(pearson([0.1, 0.4, 0.3], [0.5, 0.7, 0.6]))
    r, n = return_accuracy_r([])
    assert n == 0 and math.isnan(r)


def test_an_episodes_csv_without_a_column_names_it(tmp_path):
    run = make_ppo_run(tmp_path / "ppo")
    _write_csv(run / "episodes.csv", [c for c in EPISODE_COLUMNS if c != "final_acc"], [{"update": 1, "env": 0}])
    with pytest.raises(ReportError, match=r"episodes\.csv: missing column.*final_acc"):
        write_report(run)
