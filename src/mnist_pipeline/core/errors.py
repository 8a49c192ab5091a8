"""Errors a user can act on: the CLI prints them as one line, never as a traceback."""

import signal


def first_line(exc: BaseException) -> str:
    """An exception's first line, for a one-line error (MLflow's messages run to pages)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class PipelineError(Exception):
    """A problem with the user's input or environment; the message names the fix."""

    exit_code = 1


class ParamsError(PipelineError):
    """params.yaml is malformed or holds a value the pipeline does not accept."""

    exit_code = 2


class InputError(PipelineError):
    """A file or model given on the command line cannot be used as it is."""

    exit_code = 2


class Terminated(KeyboardInterrupt):
    """SIGTERM (CI cancelling a job, `kill`), unwound like Ctrl-C so runs and temp files are closed."""


def interrupt(signum: int) -> KeyboardInterrupt:
    """The exception a stage unwinds with for SIGINT or SIGTERM."""
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
