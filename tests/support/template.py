"""One trained repository per test run, copied wherever a test needs a trained repository of its own.

Training the small pipeline from scratch costs a minute of `dvc repro` on 2 busy cores (four
processes that each load TensorFlow and MLflow); copying a trained repository costs a second. The
template is built once for the whole run (the first pytest-xdist worker to ask builds it while the
other waits on a lock), and each copy is a repository as if the pipeline had run in it: git history,
DVC cache and outputs, and its own MLflow store. Plain Python, no pytest (tests/conftest.py wraps it).
"""

import shutil
import sqlite3
import subprocess
from pathlib import Path

from filelock import FileLock

from tests.support.harness import REPRO_LOG, TRAINED_EXPERIMENT, make_repo, repo_env, sh, small_params

READY = ".template-ready"  # written last: a template without it was interrupted and is built again


def trained_template(folder: Path, mnist_dir: Path) -> Path:
    """The template in `folder` (shared by the run's workers), built there by whoever comes first:
    small_params(TRAINED_EXPERIMENT) trained by `dvc repro`, its log kept as REPRO_LOG (stdout and
    stderr interleaved, as a user reads them), and the baseline (dvc.lock, reports/) committed as CI
    commits it on main."""
    root = folder / "trained-template"
    with FileLock(folder / "trained-template.lock"):
        if (root / READY).exists():
            return root
        shutil.rmtree(root, ignore_errors=True)
        make_repo(root, small_params(TRAINED_EXPERIMENT), mnist_dir)
        with open(root / REPRO_LOG, "w") as log:
            done = subprocess.run(
                ["dvc", "repro"], cwd=root, env=repo_env(root, COLUMNS="120"), stdout=log, stderr=subprocess.STDOUT
            )
        if done.returncode != 0:
            raise AssertionError(f"dvc repro exited {done.returncode}\n{(root / REPRO_LOG).read_text()}")
        sh(root, "git", "add", "dvc.lock", "reports")
        sh(root, "git", "commit", "-qm", "baseline: dvc.lock and reports/")
        (root / READY).touch()
    return root


def trained_copy(template: Path, dest: Path) -> Path:
    """A copy of the template at `dest`, its MLflow store moved with it.

    A local store records absolute paths (the experiment's and each run's artifact location, each
    logged model's, the MLmodel files'), and the pipeline refuses a store whose artifacts live in
    another folder (tracking/store.py's check_artifact_home): each is rewritten to `dest`, as if the
    pipeline had run there. DVC's own temporary state (locks, file times) is left behind: DVC makes
    it anew."""
    shutil.copytree(
        template, dest, symlinks=True, ignore=lambda folder, names: ["tmp"] if folder.endswith(".dvc") else []
    )
    (dest / READY).unlink()
    old, new = str(template), str(dest)
    with sqlite3.connect(dest / "mlflow.db") as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for column in text_columns(db, table):
                db.execute(
                    f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) WHERE instr("{column}", ?) > 0',
                    (old, new, old),
                )
    db.close()  # the context manager commits; closing is ours
    for mlmodel in (dest / "mlruns").rglob("MLmodel"):
        mlmodel.chmod(0o644)
        mlmodel.write_text(mlmodel.read_text().replace(old, new))
    return dest


def text_columns(db: sqlite3.Connection, table: str) -> list[str]:
    """The columns of `table` that hold text (SQLite's affinity rules: a type naming CHAR, TEXT or CLOB)."""
    return [
        row[1]
        for row in db.execute(f"PRAGMA table_info('{table}')")
        if any(t in row[2].upper() for t in ("CHAR", "TEXT", "CLOB"))
    ]
