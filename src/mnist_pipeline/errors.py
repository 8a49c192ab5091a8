"""Errors a user can act on: the CLI prints them as one line, never as a traceback."""


class PipelineError(Exception):
    """A problem with the user's input or environment; the message names the fix."""

    exit_code = 1


class ParamsError(PipelineError):
    """params.yaml is malformed or holds a value the pipeline does not accept."""

    exit_code = 2


class InputError(PipelineError):
    """A file or model given on the command line cannot be used as it is."""

    exit_code = 2
