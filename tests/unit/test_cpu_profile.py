"""`python -m pytest -p tests.support.cpu_profile` (docs/testing.md quotes its table): a test's own
CPU and its children's land in its module's row, through a pytest-xdist worker."""

import os
import subprocess
import sys

from tests.support.harness import REPO

BURN = "sum(i * i for i in range(8_000_000))"  # half a CPU second, about


def test_each_module_row_holds_its_tests_own_cpu_and_their_childrens(tmp_path):
    (tmp_path / "test_own.py").write_text(f"def test_burn():\n    {BURN}\n")
    (tmp_path / "test_child.py").write_text(
        "import subprocess, sys\n\n\n"
        f"def test_burn():\n    subprocess.run([sys.executable, '-c', {BURN!r}], check=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", os.devnull, "-p", "tests.support.cpu_profile", "-n", "1", "-q"],
        cwd=tmp_path,
        env=os.environ | {"PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    table = done.stdout[done.stdout.index("CPU seconds by module") :].splitlines()
    assert table[1].split() == ["wall", "own", "children", "CPU", "module"]
    rows = {line.split()[-1]: [float(cell) for cell in line.split()[:4]] for line in table[2:4]}
    own, child = rows["test_own.py"], rows["test_child.py"]
    assert own[1] > 0.2 and own[2] < 0.05, own
    assert child[2] > 0.2 and child[1] < child[2], child
    assert table[4].split()[-3:] == ["all", "2", "modules"]
