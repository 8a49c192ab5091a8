"""`mark-dead-runs`: every RUNNING run of the tracking store whose process is gone, marked KILLED
(tracking/liveness.py says how a process is known to be gone)."""

import argparse

from mnist_pipeline.core.command import layout_of
from mnist_pipeline.core.params import load_params


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Mark KILLED every RUNNING run in the tracking store whose process is gone "
        "(killed with SIGKILL, out of memory, a machine that rebooted): on this machine, "
        "no process with its PID and start time; from another machine, no heartbeat for "
        "10 minutes. Prints one line per run it marks. Each train or evaluate stage does "
        "the same for its own model's runs."
    )


def run(args: argparse.Namespace) -> None:
    load_params(args.params)
    # MLflow loads in seconds: only once params.yaml has passed.
    from mnist_pipeline.tracking.liveness import mark_dead_runs
    from mnist_pipeline.tracking.store import check_store

    root = layout_of(args).root
    check_store(root)
    print("\n".join(mark_dead_runs(root)) or "no RUNNING run has a dead process")
