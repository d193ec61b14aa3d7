"""docs/runtime.md §8: `esper-run report` draws every PNG, of the documented pixel size and not blank, for a
heuristic run, a PPO learning run and a compare directory; bad input raises ReportError (exit 2)."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from esper.shell.report import (
    DPI,
    PANEL_SIZE,
    PPO_SIZE,
    REPORT_CELL,
    SEEDS_SIZE,
    ReportError,
    draw_seeds,
    pixel_size,
    report_grid,
    timeline_runs,
    write_report,
)
from esper.shell.report_data import METRICS_REQUIRED, Group, load_groups, mean_std, stage_spans
from esper.shell.telemetry.rundir import METRICS_COLUMNS, SLOT_COLUMNS

# The lead's ppo.csv header, spelled out here (not imported) so a drift in either side fails a test.
PPO_HEADER = ("update", "episodes", "env_steps", "mean_return", "mean_final_acc", "entropy_op", "entropy_slot",
              "entropy_blueprint", "entropy_tempo", "approx_kl", "clip_frac_op", "explained_variance",
              "value_loss", "policy_loss", "early_stopped", "mean_germinations", "mean_culls", "mean_train_flops")
PPO_ADDED = 3  # the last columns of PPO_HEADER, absent from ppo.csv files written before them
EPISODES_HEADER = ("update", "env", "return", "final_acc", "train_flops", "germinations", "fossilizations", "culls")
SIZES = {"accuracy": PANEL_SIZE, "loss": PANEL_SIZE, "params": PANEL_SIZE, "seeds": SEEDS_SIZE, "ppo": PPO_SIZE}
ORANGE, GREEN, CULL_RED = (255, 127, 14), (44, 160, 44), (214, 39, 40)  # BLENDING, FOSSILIZED, CULLED
BLUE = (31, 119, 180)  # first group colour
BAND = (215, 230, 241)  # its ± std band: alpha 0.18 over white

# ---- fixture builders: small files written directly ----------------------------------------------------

MID = ["DORMANT"] * 2 + ["GERMINATED", "TRAINING", "TRAINING", "BLENDING", "BLENDING", "PROBATIONARY"] + \
    ["FOSSILIZED"] * 4
LATE = ["DORMANT", "TRAINING", "TRAINING", "TRAINING", "CULLED", "EMBARGOED", "EMBARGOED", "RESETTING",
        "DORMANT", "GERMINATED", "TRAINING", "TRAINING"]
ALPHA = {"BLENDING": 0.5, "PROBATIONARY": 1.0, "FOSSILIZED": 1.0}


def _slot_cells(slot: str, stage: str, blueprint: str) -> dict[str, object]:
    dormant = stage in ("DORMANT", "EMBARGOED", "RESETTING")
    return {f"{slot}_stage": stage, f"{slot}_blueprint": "" if dormant else blueprint,
            f"{slot}_alpha": ALPHA.get(stage, 0.0), f"{slot}_contrib": "" if dormant else 0.01}


def write_metrics(run: Path, *, epochs: int = 12, acc_shift: float = 0.0, rollbacks: tuple[int, ...] = (),
                  seeds: bool = True, drop: str | None = None) -> None:
    run.mkdir(parents=True, exist_ok=True)
    rows = []
    for e in range(1, epochs + 1):
        mid, late = (MID[e - 1], LATE[e - 1]) if seeds else ("DORMANT", "DORMANT")
        seed_params = (900 if mid != "DORMANT" else 0) + (700 if late in ("TRAINING", "GERMINATED") else 0)
        row = {"episode": 0, "env": 0, "epoch": e, "train_loss": (2.3 - acc_shift) / e ** 0.5,
               "train_acc": 0.1 + 0.06 * e, "val_loss": (2.4 - acc_shift) / e ** 0.4,
               "val_acc": 0.1 + 0.05 * e + acc_shift, "params": 6418 + seed_params,
               "seed_params": seed_params, "live_seeds": 1, "fossilized": int(mid == "FOSSILIZED"),
               "action": "WAIT", "reason": "awaiting_gate", "rollback": int(e in rollbacks), "epoch_s": 0.5}
        row |= _slot_cells("mid", mid, "conv_light") | _slot_cells("late", late, "attention")
        rows.append(row)
    header = [*METRICS_COLUMNS, *(f"{s}_{c}" for s in ("mid", "late") for c in SLOT_COLUMNS)]
    _write_csv(run / "metrics.csv", [h for h in header if h != drop], rows)


def _write_csv(path: Path, header: list[str], rows: list[dict[str, object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj), encoding="utf-8")


def make_run(run: Path, controller: str = "heuristic", seed: int = 0, **kw: object) -> Path:
    write_metrics(run, **kw)
    write_json(run / "config.json", {"run_id": run.name, "config": {"train": {
        "task": "synth-images", "controller": controller, "seed": seed}}})
    write_json(run / "summary.json", {"task": "synth-images", "controller": controller, "seed": seed,
                                      "status": "ok", "final_val_acc": 0.7})
    return run


def make_ppo_run(run: Path, *, updates: int = 10, drop: str | None = None, seed: int = 0, old: bool = False) -> Path:
    """A PPO learning run's files; `old`: as written before episodes.csv and ppo.csv's growth columns."""
    run.mkdir(parents=True, exist_ok=True)
    write_json(run / "config.json", {"config": {"train": {"task": "synth-images", "controller": "ppo",
                                                          "seed": seed}}})
    write_json(run / "rl_summary.json", {"updates": updates})
    (run / "events.jsonl").write_text("", encoding="utf-8")
    rng = np.random.default_rng(seed)
    rows = [{"update": u, "episodes": 8 * u, "env_steps": 200 * u, "mean_return": 0.1 * u + rng.normal(0, 0.05),
             "mean_final_acc": 0.5 + 0.02 * u, "entropy_op": 1.3 - 0.05 * u, "entropy_slot": 1.0 - 0.03 * u,
             "entropy_blueprint": 1.6 - 0.04 * u, "entropy_tempo": 1.1 - 0.02 * u, "approx_kl": 0.01 + 0.002 * u,
             "clip_frac_op": 0.1 + 0.01 * u, "explained_variance": -0.2 + 0.1 * u, "value_loss": 1.0 / u,
             "policy_loss": -0.01 * u, "early_stopped": int(u % 4 == 0), "mean_germinations": 2.0 - 0.1 * u,
             "mean_culls": 1.0 - 0.08 * u, "mean_train_flops": 1e9 + 1e7 * u} for u in range(1, updates + 1)]
    header = PPO_HEADER[:-PPO_ADDED] if old else PPO_HEADER
    _write_csv(run / "ppo.csv", [h for h in header if h != drop], rows)
    if not old:
        episodes = [{"update": u, "env": i, "return": 0.1 * u + rng.normal(0, 0.1),
                     "final_acc": 0.5 + 0.02 * u + 0.01 * i, "train_flops": 10**9 + 10**7 * i,
                     "germinations": i % 3, "fossilizations": i % 2, "culls": i % 2}
                    for u in range(1, updates + 1) for i in range(4)]
        _write_csv(run / "episodes.csv", list(EPISODES_HEADER), episodes)
    return run


def make_compare(root: Path, *, with_ppo: bool = False, meta: dict[str, object] | None = None) -> Path:
    for seed in (0, 1):
        make_run(root / f"static-s{seed}", "static", seed, seeds=False, acc_shift=-0.1 + 0.02 * seed)
        make_run(root / f"heuristic-s{seed}", "heuristic", seed, acc_shift=0.03 * seed, rollbacks=(6,) * seed)
        if with_ppo:
            make_ppo_run(root / f"ppo-s{seed}", seed=seed)
    write_json(root / "compare.json", {"meta": meta if meta is not None else {"task": "synth-images"}})
    return root


# ---- image checks ------------------------------------------------------------------------------------


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def assert_not_blank(img: np.ndarray) -> None:
    """A drawn figure has many colours (lines, text antialiasing) and real contrast; a blank one neither."""
    packed = (img[..., 0].astype(np.int32) << 16) | (img[..., 1].astype(np.int32) << 8) | img[..., 2]
    colours = len(np.unique(packed))
    assert colours > 50, f"only {colours} distinct colours"
    assert img.std() > 10.0, f"pixel std {img.std():.2f}"
    assert (img.min(axis=2) < 128).mean() > 0.002, "almost no dark pixels"


def has_colour(img: np.ndarray, rgb: tuple[int, int, int], tol: int = 3, at_least: int = 20) -> bool:
    return int((np.abs(img.astype(int) - rgb).max(axis=2) <= tol).sum()) >= at_least


def check_pngs(paths: list[Path], out: Path, expected: set[str]) -> dict[str, np.ndarray]:
    assert {p.name for p in paths} == {f"{n}.png" for n in expected}
    assert paths[-1].name == "report.png" and all(p.parent == out for p in paths)
    images = {}
    for path in paths:
        img = pixels(path)
        name = path.stem
        if name == "report":
            rows, cols = report_grid(len(expected) - 1)
            size = pixel_size((cols * REPORT_CELL[0], rows * REPORT_CELL[1]))
        else:
            size = pixel_size(SIZES[name])
        assert (img.shape[1], img.shape[0]) == size, name
        assert_not_blank(img)
        images[name] = img
    return images


def test_sizes_are_inches_times_dpi():
    assert DPI == 150
    assert pixel_size(PANEL_SIZE) == (1200, 675)
    assert pixel_size(SEEDS_SIZE) == (1500, 825)
    assert pixel_size(PPO_SIZE) == (2400, 975)
    assert [report_grid(n) for n in (1, 4, 5)] == [(1, 1), (2, 2), (2, 3)]


def test_non_blank_check_rejects_blank_images(tmp_path):
    for fill in (255, 0, 128):
        with pytest.raises(AssertionError):
            assert_not_blank(np.full((675, 1200, 3), fill, dtype=np.uint8))
    sparse = np.full((675, 1200, 3), 255, dtype=np.uint8)
    sparse[300:302, :] = 0  # one black rule on white: contrast, but not a drawing
    with pytest.raises(AssertionError):
        assert_not_blank(sparse)


# ---- the three kinds of target ----------------------------------------------------------------------


def test_heuristic_run_draws_every_panel(tmp_path):
    run = make_run(tmp_path / "run", rollbacks=(9,))
    images = check_pngs(write_report(run), run / "report", {"accuracy", "loss", "seeds", "params", "report"})
    seeds = images["seeds"]
    for colour in (ORANGE, GREEN, CULL_RED):
        assert has_colour(seeds, colour), colour
    rollback_red = (seeds[..., 0] > 230) & (seeds[..., 1] < 40) & (seeds[..., 2] < 40)
    assert rollback_red.sum() > 50
    assert has_colour(images["accuracy"], BLUE)


def test_no_rollback_no_red_dashes(tmp_path):
    seeds = check_pngs(write_report(make_run(tmp_path / "run")), tmp_path / "run" / "report",
                       {"accuracy", "loss", "seeds", "params", "report"})["seeds"]
    assert ((seeds[..., 0] > 230) & (seeds[..., 1] < 40) & (seeds[..., 2] < 40)).sum() == 0


def test_ppo_learning_run_draws_ppo_and_report_only(tmp_path):
    run = make_ppo_run(tmp_path / "ppo")
    images = check_pngs(write_report(run), run / "report", {"ppo", "report"})
    assert has_colour(images["ppo"], BLUE)


@pytest.mark.parametrize("with_ppo", [False, True])
def test_compare_dir_draws_groups_and_static_baseline(tmp_path, with_ppo):
    root = make_compare(tmp_path / "cmp", with_ppo=with_ppo)
    expected = {"accuracy", "loss", "seeds", "params", "report"} | ({"ppo"} if with_ppo else set())
    images = check_pngs(write_report(root), root / "report", expected)
    grey = (115, 115, 115)  # the static group's 0.45 grey
    assert has_colour(images["accuracy"], grey) and has_colour(images["accuracy"], BLUE)
    assert has_colour(images["params"], grey)  # static's count as a horizontal line
    assert has_colour(images["accuracy"], BAND, at_least=2000)  # two heuristic seeds that differ: a std band


def test_compare_title_reads_the_task_not_the_folder_twice(tmp_path):
    assert load_groups(make_compare(tmp_path / "compare"))[0] == "synth-images · compare"
    # compare.json's task wins; a folder named otherwise is kept; without meta, the runs' own task
    assert load_groups(make_compare(tmp_path / "a" / "compare", meta={"task": "cifar10"}))[0] == "cifar10 · compare"
    assert load_groups(make_compare(tmp_path / "early", meta={}))[0] == "synth-images · compare · early"


def _groups_of(root: Path) -> list[Group]:
    return [Group(name=name, runs=tuple(runs), colour="#1f77b4", baseline=name == "static")
            for name, runs in load_groups(root)[1].items()]


def _timeline_labels(groups: list[Group]) -> list[str]:
    fig = Figure(figsize=SEEDS_SIZE, layout="constrained")
    draw_seeds(fig, groups)
    return [ax.get_ylabel() for ax in fig.axes]


def test_seed_timeline_leaves_out_groups_that_never_germinate(tmp_path):
    root = make_compare(tmp_path / "compare")
    for seed in (0, 1):  # a width-matched static baseline: not the `static` group, and it never germinates
        make_run(root / f"static-param-s{seed}", "static", seed, seeds=False)
    assert [name for name, _ in timeline_runs(_groups_of(root))] == ["heuristic-s0"]
    assert _timeline_labels(_groups_of(root)) == ["heuristic-s0\nmid", "heuristic-s0\nlate"]


def test_seed_timeline_shows_a_groups_first_run_that_germinated(tmp_path):
    root = tmp_path / "compare"
    make_run(root / "heuristic-s0", seeds=False)
    make_run(root / "heuristic-s1", seed=1)
    make_run(root / "grow-s0", "heuristic")
    assert [name for name, _ in timeline_runs(_groups_of(root))] == ["grow-s0", "heuristic-s1"]
    assert _timeline_labels(_groups_of(root)) == ["grow-s0\nmid", "grow-s0\nlate", "heuristic-s1\nmid",
                                                  "heuristic-s1\nlate"]


def test_seed_timeline_of_a_compare_where_nothing_germinated_is_a_note(tmp_path):
    root = tmp_path / "compare"
    for group in ("static-param", "static-flop"):
        make_run(root / f"{group}-s0", "static", seeds=False)
    assert timeline_runs(_groups_of(root)) == [] and _timeline_labels(_groups_of(root)) == []
    lone = _groups_of(make_run(tmp_path / "lone", "static", seeds=False))
    assert _timeline_labels(lone) == ["mid", "late"]  # one run alone: its dormant slots are its result


def test_extra_runs_join_their_group(tmp_path):
    run = make_run(tmp_path / "a")
    other = make_run(tmp_path / "b", seed=1, acc_shift=0.05)
    everything = {"accuracy", "loss", "seeds", "params", "report"}
    alone = check_pngs(write_report(run), run / "report", everything)["accuracy"]
    assert not has_colour(alone, BAND, at_least=2000)
    images = check_pngs(write_report(run, runs=[other], out=tmp_path / "out"), tmp_path / "out", everything)
    assert has_colour(images["accuracy"], BAND, at_least=2000)


def test_baseline_run_is_drawn_in_grey(tmp_path):
    run = make_run(tmp_path / "run")
    base = make_run(tmp_path / "base", "static", seeds=False, acc_shift=-0.1)
    everything = {"accuracy", "loss", "seeds", "params", "report"}
    grey = (166, 166, 166)  # 0.65: the first explicit baseline
    plain = check_pngs(write_report(run), run / "report", everything)
    assert not has_colour(plain["accuracy"], grey, tol=0)
    images = check_pngs(write_report(run, baselines=[base]), run / "report", everything)
    assert has_colour(images["accuracy"], grey, tol=0) and has_colour(images["params"], grey, tol=0)


def test_real_tiny_run(tmp_path):
    from esper.shell.driver import train
    from esper.shell.run_config import RunConfig

    out = tmp_path / "tiny"
    train(RunConfig(epochs=3, train_size=256, val_size=128, batch_size=64, telemetry_level="off", progress=False),
          out=str(out))
    everything = {"accuracy", "loss", "seeds", "params", "report"}
    assert {p.stem for p in (out / "report").glob("*.png")} == everything  # drawn at the end of train
    check_pngs(write_report(out), out / "report", everything)


# ---- errors ------------------------------------------------------------------------------------------


def test_missing_run_dir_raises(tmp_path):
    with pytest.raises(ReportError, match="no such run directory"):
        write_report(tmp_path / "nope")


def test_missing_metrics_column_raises_naming_it(tmp_path):
    run = make_run(tmp_path / "run", drop="val_acc")
    with pytest.raises(ReportError, match=r"missing column.*val_acc"):
        write_report(run)


def test_missing_ppo_column_raises_naming_it(tmp_path):
    with pytest.raises(ReportError, match=r"missing column.*clip_frac_op"):
        write_report(make_ppo_run(tmp_path / "ppo", drop="clip_frac_op"))


def test_dir_without_results_raises(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match=r"metrics\.csv is missing"):
        write_report(tmp_path / "empty")
    ppo = make_ppo_run(tmp_path / "ppo")
    (ppo / "ppo.csv").unlink()
    with pytest.raises(ReportError, match=r"ppo\.csv is missing"):
        write_report(ppo)


def test_unreadable_cell_and_empty_file_raise(tmp_path):
    run = make_run(tmp_path / "run")
    with (run / "metrics.csv").open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header, rows = list(reader.fieldnames or []), list(reader)
    rows[2]["val_acc"] = "oops"
    _write_csv(run / "metrics.csv", header, rows)
    with pytest.raises(ReportError, match="line 4: val_acc"):
        write_report(run)
    _write_csv(run / "metrics.csv", header, [])
    with pytest.raises(ReportError, match="no rows"):
        write_report(run)


def test_cli_maps_report_error_to_exit_2(tmp_path, capsys):
    from esper.shell.cli import main

    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("esper-run: error:") and "\n" not in err


# ---- the pieces --------------------------------------------------------------------------------------


def test_required_metrics_columns_are_the_run_directorys():
    assert set(METRICS_REQUIRED) <= set(METRICS_COLUMNS)


def test_stage_spans_split_stages_and_label_each_seed_once():
    spans = stage_spans(LATE, ["" if s in ("DORMANT", "EMBARGOED", "RESETTING") else "attention" for s in LATE])
    got = [(s.start, s.stop, s.stage, s.label) for s in spans]
    assert got == [(1, 4, "TRAINING", "attention"), (4, 5, "CULLED", None), (5, 7, "EMBARGOED", None),
                   (7, 8, "RESETTING", None), (9, 10, "GERMINATED", "attention"), (10, 12, "TRAINING", None)]
    # a blueprint change without a gap is a new seed; a static fossil from epoch 1 is labelled
    spans = stage_spans(["FOSSILIZED", "FOSSILIZED", "TRAINING"], ["a", "a", "b"])
    assert [(s.stage, s.label) for s in spans] == [("FOSSILIZED", "a"), ("TRAINING", "b")]


def test_mean_std_aligns_series_of_different_length():
    x, mean, std, n = mean_std([(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0])),
                                (np.array([1.0, 2.0]), np.array([3.0, np.inf]))])
    assert n == 2 and x.tolist() == [1.0, 2.0, 3.0]
    assert mean.tolist() == [2.0, 2.0, 3.0]  # inf is a gap, not a value
    assert std.tolist() == [1.0, 0.0, 0.0]


def test_ppo_columns_are_the_ppo_runners():
    from esper.shell.report_data import EPISODE_COLUMNS, PPO_COLUMNS, PPO_OPTIONAL
    from esper.shell.rl.episodes import EPISODE_COLUMNS as episodes_written
    from esper.shell.rl.runner import PPO_COLUMNS as written

    assert tuple(written) == PPO_HEADER == (*PPO_COLUMNS, *PPO_OPTIONAL)
    assert tuple(episodes_written) == EPISODES_HEADER == EPISODE_COLUMNS
