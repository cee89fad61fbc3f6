"""`avfusion <command> ...`: one console script, one module per command.

Each command module defines `add_arguments(parser)` and `main(args) -> int`; it is imported only
when its command runs, so `avfusion --help` stays fast.

    avfusion model-summary --preset deepavfusion-vggsound
    avfusion pretrain --config avfusion/tasks/examples/pretrain.yaml --set optim.epochs=2 --out runs/pretrain/x

Errors are one line, `error: <file or key>: <problem>`, with an exit code: 1 config (also a run
folder in use or a checkpoint of another config), 2 usage, 3 data (media, manifests, files, disk,
non-finite values). `--debug` anywhere on the line shows the traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import re
import sys

from .runs import TASKS

EXIT_CONFIG, EXIT_USAGE, EXIT_DATA = 1, 2, 3

# command -> (module, one-line help)
COMMANDS = {
    "model-summary": ("avfusion.models.summary", "parameter counts per part, built on the meta device"),
    "data": ("avfusion.data.cli", "prepare manifests for official layouts; make the embedded benchmark"),
    "media-info": ("avfusion.media_info", "streams, durations, rates and model-input shapes of media files"),
    **TASKS,                       # the DAG's job commands (avfusion/runs.py)
    "knn-probe": ("avfusion.tasks.knn_probe", "leave-one-out 1-NN probe of a checkpoint"),
    "report": ("avfusion.report.cli", "tables, figures and the claims report from metrics.json files"),
}


EPILOG = """examples:
    avfusion data make-tuxav --scale smoke --out data/tuxav-smoke
    avfusion model-summary --preset deepavfusion-vggsound
    avfusion COMMAND --help

The whole DAG: `make tiny` (README.md); job config keys: docs/interfaces.md."""

# "spec 2.1", "spec 8 items 12, 17", "spec section 5", "spec 3, Figure 3": pointers into the
# maintainers' notes on the official code, which a user does not have; dropped from --help.
_SPEC_REF = re.compile(r"\bspec (?:section )?\d+(?:\.\d+)*(?: items? \d+(?:, \d+)*)?(?:, (?=Figure))?[;,]?[ ]?")


def user_help(text: str | None) -> str:
    """A module docstring as --help text: examples keep their lines, spec pointers are dropped."""
    text = _SPEC_REF.sub("", text or "")
    text = re.sub(r" ?\(\s*\)", "", text)     # "probe (spec 3.3) on" -> "probe on"
    text = re.sub(r",\s*\)", ")", text)        # "(single clip, spec 4.1)" -> "(single clip)"
    return text.strip("\n")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="avfusion", description=__doc__.splitlines()[0], epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"avfusion {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def exit_code(err: BaseException) -> int:
    """The exit code of an error: 1 config, 3 data (files, media, non-finite numbers), else 1."""
    from .config import ConfigError

    if isinstance(err, ConfigError):
        return EXIT_CONFIG
    if isinstance(err, (OSError, ValueError, FloatingPointError)):  # MediaError is a ValueError
        return EXIT_DATA
    return EXIT_CONFIG


def describe(err: BaseException) -> str:
    """One line for the user: the file or key and the problem (no traceback)."""
    from .config import ConfigError
    from .runlock import RunFolderBusy

    if isinstance(err, OSError) and err.filename is not None:
        return f"{err.filename}: {err.strerror or err}"
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror} (errno {err.errno})"
    text = str(err).strip() or type(err).__name__
    if isinstance(err, (ConfigError, RunFolderBusy, ValueError, FloatingPointError, OSError)):
        return text
    return f"{type(err).__name__}: {text} (unexpected; rerun with --debug for the traceback)"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        return run_command(argv)
    except Exception as err:
        if debug:
            raise
        print(f"error: {describe(err)}", file=sys.stderr, flush=True)
        return exit_code(err)


def run_command(argv: list[str]) -> int:
    """`avfusion ARGV` with errors raised (`main` turns them into a line and an exit code)."""
    if not argv:  # bare `avfusion`: usage on stderr, exit 2 (as argparse does for a missing argument)
        parser = build_parser()
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: a COMMAND is required; `avfusion --help` lists them", file=sys.stderr)
        return 2
    if argv[0].startswith("-") or argv[0] not in COMMANDS:
        parser = build_parser()
        if not argv[0].startswith("-"):
            parser.error(f"unknown command {argv[0]!r}; choose from {', '.join(COMMANDS)}")
        parser.parse_args(argv)  # --help / --version exit here; anything else is an error
        parser.print_usage(sys.stderr)
        return 2
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"avfusion {name}", description=user_help(module.__doc__),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    return int(module.main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
