"""`esper-run`: train, compare, report, evaluate, tasks (docs/runtime.md §6, §8).

User errors print one line on stderr (`esper-run: error: <what>`) and exit 2; a diverged run
exits 1; Ctrl-C exits 130 and SIGTERM 143, each after closing the run as interrupted. `--debug`
(or ESPER_DEBUG=1) shows tracebacks.
"""

import argparse
import contextlib
import os
import sys
import tempfile
import traceback
from typing import Any, NoReturn

from esper import __version__
from esper.core.errors import ConfigError, HostConfigError, LifecycleError, UnknownBlueprintError
from esper.shell import rl_settings
from esper.shell.checkpoint import CheckpointError
from esper.shell.data.errors import DataError
from esper.shell.dist import PeerFailed, end_rank, launched
from esper.shell.run_config import FLAGS, RunConfig, csv_list, load_config_file, resolve
from esper.shell.telemetry import RunDirectoryError

USAGE_ERROR, RUNTIME_ERROR, BROKEN_PIPE = 2, 1, 141  # 141 = 128 + SIGPIPE; 130/143 come from interrupt.exit_code
LOST_PEER = 3  # a rank whose collective failed because another rank died: the launcher names that one
USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, HostConfigError, UnknownBlueprintError, DataError,
                                             CheckpointError, RunDirectoryError, LifecycleError, PeerFailed)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not argparse's usage block
        print(f"esper-run: error: {message}; see '{self.prog} --help'", file=sys.stderr)
        raise SystemExit(USAGE_ERROR)


def parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="esper-run", description="Grow neural networks while they train.")
    parser.add_argument("--version", action="version", version=f"esper {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks (also ESPER_DEBUG=1)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    train = commands.add_parser("train", help="grow a network on a task")
    train.add_argument("--config", help="TOML file, or a run's config.json")
    train.add_argument("--out", help="run directory (default runs/<run_id>)")
    train.add_argument("--resume", metavar="RUN_DIR|CKPT", help="continue a run to its configured total")
    _add_run_flags(train)
    compare = commands.add_parser("compare", help="every controller over K seeds beside fair static baselines")
    compare.add_argument("--controllers", type=csv_list, default=("heuristic",),
                         help="comma-separated controllers compared with static (heuristic, ppo)")
    compare.add_argument("--seeds", type=int, default=3, help="K run seeds per group: FIRST..FIRST+K-1")
    compare.add_argument("--first-seed", type=int, default=0, metavar="FIRST",
                         help="the first run seed (default 0); judge a policy on seeds it was never designed on")
    compare.add_argument("--config", help="TOML file, or a run's config.json")
    compare.add_argument("--out", help="compare directory (default runs/compare-<task>-<time>)")
    compare.add_argument("--jobs", type=int, default=1,
                         help="runs at once, each in its own process (default 1: one after another)")
    _add_run_flags(compare, skip=("controller", "seed"))
    report = commands.add_parser("report", help="draw a run's (or a compare's) PNGs into <dir>/report/")
    report.add_argument("target", metavar="RUN_DIR|COMPARE_DIR")
    report.add_argument("--baseline", action="append", default=[], metavar="RUN_DIR",
                        help="a run drawn in grey beside it (repeatable)")
    evaluate = commands.add_parser("evaluate", help="evaluate a run's checkpoint on the held-out split")
    evaluate.add_argument("target", metavar="RUN_DIR|CKPT")
    evaluate.add_argument("--data-dir")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    tasks = commands.add_parser("tasks", help="list task presets and whether their data is present; with "
                                "--data-dir or --dataset: what --task images finds there")
    _add_run_flags(tasks, only=TASKS_FLAGS)
    return parser


# `esper-run tasks --data-dir DIR`: the flags that decide what `--task images` derives
TASKS_FLAGS = ("task", "device", "data_dir", "data_seed", "train_size", "val_size", "dataset", "image_column",
               "label_column", "split", "image_size", "channels")


def _add_run_flags(command: argparse.ArgumentParser, skip: tuple[str, ...] = (),
                   only: tuple[str, ...] | None = None) -> None:
    for flag in FLAGS:
        if flag.key in skip or (only is not None and flag.key not in only):
            continue
        # argparse %-formats help text: a literal "10 %" in a flag's help would crash `--help`.
        kwargs: dict[str, Any] = {"dest": flag.key, "default": argparse.SUPPRESS, "help": flag.help.replace("%", "%%")}
        if flag.parse is None:
            command.add_argument(*flag.options, action="store_const", const=flag.value, **kwargs)
        else:
            command.add_argument(*flag.options, type=flag.parse, choices=flag.choices, **kwargs)
    if only is None:
        rl_settings.add_flags(command)  # --rl.FIELD for every RLConfig field


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """defaults < --config file < flags (only the flags given on the command line)."""
    flags = {flag.key: getattr(args, flag.key) for flag in FLAGS if hasattr(args, flag.key)}
    if rl := rl_settings.flag_values(args):
        flags["rl"] = rl
    file_values = load_config_file(args.config) if args.config else {}
    return resolve(file_values, flags)


def _train(args: argparse.Namespace) -> int:
    from esper.shell.dist import launched

    cfg = config_from_args(args)  # a bad flag or config is one line here, before any rank starts
    if cfg.nproc > 1 and not launched():
        from esper.shell.launch import launch

        return launch(args.argv, cfg.nproc)
    from esper.shell.entry import train  # heavy imports only for the command that needs them; PPO too

    train(cfg, out=args.out, resume=args.resume)  # the Python entry a script calls (esper.train)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from esper.shell.compare import compare

    command = "esper-run " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["compare"] else "esper-run compare"
    if "ppo" in args.controllers:
        # The base config carries --policy for the ppo group (compare.as_controller gives each group its
        # controller and keeps the policy only there); as a run's config it must say ppo to be valid.
        args.controller = "ppo"
    compare(config_from_args(args), controllers=args.controllers, seeds=args.seeds, out=args.out, command=command,
            jobs=args.jobs, first_seed=args.first_seed)
    return 0


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from esper.shell.report import ReportError, write_report

    try:
        paths = write_report(Path(args.target), baselines=[Path(b) for b in args.baseline])
    except ReportError as exc:
        raise ConfigError(str(exc)) from exc
    for path in paths:
        print(path)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from esper.shell.evaluate import evaluate

    evaluate(args.target, data_dir=args.data_dir, device=args.device, as_json=args.json)
    return 0


def _tasks(args: argparse.Namespace) -> int:
    from esper.core.tasks import IMAGES_TASK
    from esper.shell.evaluate import describe_images, list_tasks

    flags = {key: getattr(args, key) for key in TASKS_FLAGS if hasattr(args, key)}
    if flags.get("task", IMAGES_TASK) != IMAGES_TASK:
        raise ConfigError(f"esper-run tasks describes --task {IMAGES_TASK} data only, not --task {flags['task']}")
    if "data_dir" in flags or "dataset" in flags:
        describe_images(resolve({}, {**flags, "task": IMAGES_TASK}))
    else:
        list_tasks()
    return 0


def main(argv: list[str] | None = None) -> int:
    code = _run(argv)
    if launched():  # a rank of `--nproc`/torchrun ends here, files flushed (esper.shell.dist.end_rank)
        end_rank(code)
    return code


def _run(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    args.argv = argv  # what `--nproc` ranks run again
    debug = args.debug or os.environ.get("ESPER_DEBUG") == "1"
    if args.command is None:
        parser().print_help()
        return 0
    command = {"train": _train, "compare": _compare, "report": _report, "evaluate": _evaluate,
               "tasks": _tasks}[args.command]
    try:
        return command(args)
    except USER_ERRORS as exc:
        if debug:
            traceback.print_exc()
        if not _quiet_rank(exc):
            print(f"esper-run: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM as esper.shell.interrupt.Terminated
        from esper.shell.interrupt import exit_code

        print(f"esper-run: interrupted{f' ({exc})' if str(exc) else ''}", file=sys.stderr)
        return exit_code(exc)
    except BrokenPipeError:
        # The reader of stdout left (`esper-run tasks | head -1`): stop quietly, like other Unix tools.
        # stdout goes to devnull so the interpreter's flush at exit does not raise again.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE
    except Exception as exc:
        return _crashed(exc, debug)


def _crashed(exc: Exception, debug: bool) -> int:
    """An unexpected exception: one line, its traceback in the run directory; exit 1 (3 for a rank that
    only lost contact with a rank that died, so the launcher reports the one that died)."""
    from esper.shell.dist import RanksDiverged, lost_peer
    from esper.shell.telemetry.rundir import failed_run_dir
    from esper.shell.trainer import TrainingDiverged

    if debug:
        traceback.print_exc()
    path = _write_traceback(failed_run_dir(exc))
    if lost_peer(exc):
        said = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"esper-run: lost contact with another rank ({said}); traceback in {path}", file=sys.stderr)
        return LOST_PEER
    kind = "" if isinstance(exc, TrainingDiverged | RanksDiverged) else f"{type(exc).__name__}: "
    print(f"esper-run: {kind}{exc}; traceback in {path}", file=sys.stderr)
    return RUNTIME_ERROR


def _quiet_rank(exc: Exception) -> bool:
    """A rank other than 0 stopping because a rank failed while opening: rank 0 says it, once."""
    from esper.shell.dist import ranks_from_env

    return isinstance(exc, PeerFailed) and not ranks_from_env().main


def _write_traceback(run_dir: "os.PathLike[str] | None") -> str:
    """The current exception's traceback in `<run>/error.txt` (docs/runtime.md §4.6) when a run directory
    exists, else in a new temporary file: never over a file of the user's working directory."""
    if run_dir is not None:
        path = os.path.join(run_dir, "error.txt")
        with open(path, "w", encoding="utf-8") as f:
            traceback.print_exc(file=f)
        return path
    fd, path = tempfile.mkstemp(prefix="esper-run-error-", suffix=".txt")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        traceback.print_exc(file=f)
    return path


if __name__ == "__main__":
    sys.exit(main())
