"""What counts as an uncommitted change, for a run's `git.dirty` tag and ci-report's heading."""

import subprocess

from mnist_pipeline.tracking.git import git_dirty


def test_only_what_the_pipeline_does_not_write_makes_the_workspace_dirty(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "reports").mkdir()
    for name in ("params.yaml", "dvc.lock", "reports/metrics.json"):
        (tmp_path / name).write_text("a: 1\n")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "baseline")
    assert not git_dirty(tmp_path)
    (tmp_path / "dvc.lock").write_text("a: 2\n")
    (tmp_path / "reports" / "metrics.json").write_text("a: 2\n")  # a repro's new baseline
    assert not git_dirty(tmp_path)
    (tmp_path / "params.yaml").write_text("a: 2\n")
    assert git_dirty(tmp_path)
