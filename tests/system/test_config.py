import re
import subprocess
from pathlib import Path

import pytest

from tests.support.harness import REPO, make_repo, repo_env, sh, small_params, stages_run
from tests.unit.test_config import EXPERIMENTS_PAGE, quoted_errors


def page_session(page: Path, command: str) -> list[str]:
    """The output `page` shows under `$ command`, up to the end of its code block."""
    text = page.read_text()
    block = text[text.index(f"$ {command}\n") + len(command) + 3 :]
    return block[: block.index("```")].splitlines()


@pytest.mark.slow  # a git + DVC repository and five `dvc exp` commands: 10-20 s
def test_a_rejected_dvc_exp_run_keeps_its_value_in_params_yaml_until_put_back(tmp_path):
    """What docs/experiments.md ("Experiments and sweeps") says: DVC writes the -S value into
    params.yaml and leaves it there when check_params rejects it; only that line changes (params.yaml
    is laid out as DVC writes it); `dvc repro` fails until `git checkout params.yaml`; a misspelt
    key, --temp and --queue leave the file alone."""
    repo = make_repo(tmp_path / "repo", small_params("exp-rejected"), tmp_path)
    shipped = (REPO / "params.yaml").read_text()
    (repo / "params.yaml").write_text(shipped)
    sh(repo, "git", "commit", "-qam", "the shipped params.yaml")
    command = "dvc exp run -S models.mlp.epochs=ten"
    expected = page_session(EXPERIMENTS_PAGE, command)
    error = expected[3]
    assert error in quoted_errors()

    for refused in (["--temp", "-S", "models.mlp.epochs=ten"], ["-S", "models.mlp.dropuot=0.3"]):
        assert sh(repo, "dvc", "exp", "run", *refused, check=False).returncode != 0
        assert (repo / "params.yaml").read_text() == shipped, refused
    sh(repo, "dvc", "exp", "run", "--queue", "-S", "models.mlp.epochs=ten")
    assert (repo / "params.yaml").read_text() == shipped
    sh(repo, "dvc", "queue", "remove", "--all")

    done = subprocess.run(
        command.split(), cwd=repo, env=repo_env(repo), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert done.returncode != 0
    # As docs/experiments.md shows it, but for the experiment's name, which DVC draws at random, and DVC's
    # warnings that it has no outputs to restore: this repository never ran the pipeline.
    shown = [line for line in done.stdout.strip().splitlines() if not line.startswith("WARNING: No file hash info")]
    assert [re.sub(r"'[a-z]+-[a-z]+'", "'based-tell'", line) for line in shown] == expected, done.stdout
    changed = [
        (a, b)
        for a, b in zip(shipped.splitlines(), (repo / "params.yaml").read_text().splitlines(), strict=False)
        if a != b
    ]
    assert changed == [("    epochs: 26", "    epochs: ten")]
    assert len((repo / "params.yaml").read_text().splitlines()) == len(shipped.splitlines())

    again = sh(repo, "dvc", "repro", check=False)
    assert again.returncode != 0 and error in again.stderr.splitlines()

    sh(repo, "git", "checkout", "params.yaml")
    assert (repo / "params.yaml").read_text() == shipped
    assert stages_run(sh(repo, "dvc", "repro", "check_params").stdout) == ["check_params"]


# --- params.yaml as hostile input (issue 15) --------------------------------------------------
# What a pull request can put in params.yaml, which CI then runs: each is refused in one line
# that names the problem and the fix, from the parser's events or the byte count, before the
# YAML is built, in milliseconds (nine nested aliases took 91 s and 6 GB; a 50 MB file 17 s).
