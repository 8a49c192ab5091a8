"""`mnist-pipeline` run in the test's own process, for tests that check only what a command prints and
its exit code: a new process pays the import of TensorFlow or MLflow (2–7 s on 2 busy cores) before
any work. A command's exit codes and messages keep tests that start a real process too (`tune`'s in
tests/unit/test_tune.py, `predict`'s in tests/system/test_predict.py).

What `main` sets for its process is put back afterwards: the SIGTERM handler, the working folder, the
environment, the root logger (which `logging.basicConfig` configures only when it has no handler, as
in a new process). pytest's own faulthandler stays: `main`'s would write to the captured stderr."""

import logging
import os
import signal
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from unittest.mock import patch

from mnist_pipeline.cli import main


@dataclass(frozen=True)
class Done:
    """As subprocess.CompletedProcess holds it, with text output."""

    returncode: int
    stdout: str
    stderr: str


def run_main(args: list[str], cwd: Path, env: dict[str, str]) -> Done:
    """`python -m mnist_pipeline ARGS` in `cwd` with `env` as its whole environment, in this process."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    sigterm, before_env, before_cwd = signal.getsignal(signal.SIGTERM), dict(os.environ), os.getcwd()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        try:
            os.chdir(cwd)
            os.environ.clear()
            os.environ.update(env)
            root.handlers[:] = []  # pytest's capture handlers: basicConfig then adds one on stderr, as in a process
            root.setLevel(logging.WARNING)
            with redirect_stdout(out), redirect_stderr(err), patch("faulthandler.enable"):
                try:
                    code = main(args)
                except SystemExit as exit_:  # argparse's errors
                    code = 0 if exit_.code is None else exit_.code if isinstance(exit_.code, int) else 1
        finally:
            for handler in root.handlers:
                root.removeHandler(handler)
            root.handlers[:] = handlers
            root.setLevel(level)
            signal.signal(signal.SIGTERM, sigterm)
            os.chdir(before_cwd)
            os.environ.clear()
            os.environ.update(before_env)
        out.seek(0)
        err.seek(0)
        return Done(code, out.read(), err.read())
