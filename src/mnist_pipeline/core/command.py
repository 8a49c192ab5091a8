"""What every command shares: a table row naming the module that runs it, the argument parser built
from that one module, and the end of a run, where a user's error becomes one line and an exit code,
never a traceback.

A command's module defines `configure(parser)` (its arguments) and `run(args)`. It is imported only
when its command runs, so `--help` and a typo in params.yaml cost a fraction of a second, and a stage
imports the code of no other command: what dvc.yaml lists for a stage is what the stage runs.
"""

import argparse
import errno
import faulthandler
import logging
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from mnist_pipeline.core.errors import PipelineError, Terminated, interrupt
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import PARAMS_FILE
from mnist_pipeline.core.printable import printable

# A full disk, a file-size limit, a read-only folder: the user's to fix, not a bug to trace.
DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


@dataclass(frozen=True)
class Command:
    module: str  # imported when the command runs, or when its --help is asked for
    help: str  # the line `--help` lists it with


def main(prog: str, description: str, commands: dict[str, Command], argv: list[str] | None = None) -> int:
    """Parse `argv` for one of `commands`, run it, and return the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--params", type=Path, default=PARAMS_FILE, help="parameters file; outputs go beside it (default: %(default)s)"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen, module = _chosen(argv, commands), None
    for name, command in commands.items():
        subparser = subparsers.add_parser(name, help=command.help)
        if name == chosen:
            # __import__, not importlib.import_module: Python's import log (-X importtime), which checks
            # each stage's deps in dvc.yaml, records only imports made through __import__.
            __import__(command.module)
            module = sys.modules[command.module]
            module.configure(subparser)
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(module, "TAKES_OVERRIDES", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    assert module is not None  # parse_known_args has exited unless argv named a command
    signal.signal(signal.SIGTERM, _raise_interrupt)
    faulthandler.enable()  # a crash in TensorFlow's C++ (SIGSEGV, SIGABRT) still prints the Python stack
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        module.run(args)
    except PipelineError as exc:  # one line, whatever a file name or a library's message in it holds
        print(f"error: {printable(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        if exc.errno not in DISK_ERRORS:
            raise
        where = f" {printable(str(exc.filename))}" if exc.filename else ""
        print(
            f"error: cannot write{where}: {exc.strerror}; free space or fix permissions, then run again",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt as exc:
        signum = signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT
        # A command that knows more about what it leaves says so in the exception (tune: which trial failed).
        print(
            f"error: interrupted by {signum.name}; {str(exc) or 'no output was written, run the stage again'}",
            file=sys.stderr,
        )
        return 128 + signum
    return 0


def _chosen(argv: list[str], commands: dict[str, Command]) -> str | None:
    """The command `argv` names: its first word that is not an option or the value of --params
    (or of an abbreviation such as --par, which argparse takes for --params)."""
    words = iter(argv)
    for word in words:
        if len(word) > 2 and "--params".startswith(word):
            next(words, None)
        elif not word.startswith("-"):
            return word if word in commands else None
    return None


def _raise_interrupt(signum, frame):
    raise interrupt(signum)


def layout_of(args: argparse.Namespace) -> Layout:
    """Where the command reads and writes: beside the parameters file."""
    return Layout(args.params.resolve().parent)


def at_least(minimum: int):
    """An argparse type: a whole number no smaller than `minimum`."""

    def number(text: str) -> int:
        if not text.isdigit() or int(text) < minimum:
            raise argparse.ArgumentTypeError(f"{text!r}: give a whole number, at least {minimum}")
        return int(text)

    return number
