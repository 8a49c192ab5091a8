"""`push-run-cache`: `dvc push --run-cache`, plus the files of the cached runs that it leaves out, so
that another clone's `dvc repro --pull` restores a run that a teammate (or CI on main) already did
instead of training it again.

DVC 3.67 pushes the run cache's entries, but of the outputs they name only those that the workspace's
dvc.lock names and that DVC caches. A `cache: false` plot or metrics file of a cached run (the train
stage's reports/history/<model>.csv) is never pushed, so another clone finds the entry, cannot
restore it (`Missing cache files: reports/history/mlp.csv`) and trains again. DVC keeps a copy of
every run's outputs in the local cache, `cache: false` ones included, and they are pushed from there.
"""

import argparse
from pathlib import Path

from mnist_pipeline.core.command import layout_of
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.params import load_params


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Push the workspace's outputs and DVC's run cache to the DVC remote, with every file the cached "
        "runs name (dvc push --run-cache leaves out their cache: false plots and metrics), so that "
        "`dvc repro --pull` in another clone restores those runs instead of training again."
    )
    parser.add_argument("-r", "--remote", help="the DVC remote to push to (default: the default remote)")


def run(args: argparse.Namespace) -> None:
    load_params(args.params)  # DVC reads all of params.yaml (dvc.yaml loops over its models): checked first
    print(push_run_cache(layout_of(args).root, args.remote))


def push_run_cache(root: Path, remote: str | None = None) -> str:
    """Push; return the line that says what went."""
    from dvc.exceptions import DvcException  # DVC loads in a second or two: not for --help
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            pushed = repo.push(run_cache=True, remote=remote)
            runs = Path(repo.cache.legacy.path) / "runs"  # runs/<key[:2]>/<key>/<value>: one file per run
            entries = [(entry.parent.name, entry.name) for entry in runs.glob("*/*/*")]
            missing = 0
            for odb, objs in repo.stage_cache.get_used_objs(entries).items():
                result = repo.cloud.push(objs, remote=remote, odb=odb)
                pushed += len(result.transferred)
                missing += len(result.failed)
    except DvcException as exc:
        raise PipelineError(f"dvc push --run-cache failed: {exc}; fix the DVC remote and run again") from None
    line = f"{pushed} files pushed; the DVC remote holds the run cache of {len(entries)} runs and their outputs"
    if missing:  # entries pulled from elsewhere whose files this clone never had: restorable only where they are
        line += f" ({missing} files that some runs name are not in this clone's cache and were not pushed)"
    return line
