"""The repository's git state, as runs record it (commit, dirty) and ci-report reads it (a base's
files): plain `git` calls that answer None where git is missing or the folder is no repository."""

import subprocess
from pathlib import Path


def git_dirty(root: Path) -> bool:
    """Whether tracked files differ from HEAD; what the pipeline itself writes (dvc.lock, and the
    reports/ committed beside it) does not count."""
    pathspec = [".", ":(exclude)dvc.lock", ":(exclude)reports"]
    return bool(git_output(root, "status", "--porcelain", "--untracked-files=no", "--", *pathspec))


def git_output(root: Path, *args: str) -> str | None:
    """What `git ARGS` prints in `root`, or None when git is missing or fails (not a repository)."""
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None
