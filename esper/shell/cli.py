"""`esper-run`: the command-line entry point.

User errors print one line on stderr and exit 2; no traceback.
"""

import argparse
import sys

USAGE_ERROR = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="esper-run", description="Grow neural networks while they train.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("train", help="grow a network on a task (arrives with the epoch engine)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help()
        return 0
    print(f"esper-run: '{args.command}' is not available yet in this version", file=sys.stderr)
    return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
