import os
import subprocess
import sys

import pytest

from tests.support.harness import REPO

# Large enough that TF splits the matrix products over all its threads.
FIT_IN_A_NEW_PROCESS = """
import hashlib
from tests.unit.test_models import fit_weights
print(hashlib.sha256(b"".join(w.tobytes() for w in fit_weights(7, images=2048, units=512))).hexdigest())
"""


@pytest.mark.slow  # two processes that each import TensorFlow and fit: 20 s
def test_the_seed_decides_the_weights_across_processes():
    """Op determinism is off on a CPU (it only slows the fit): two fresh processes must still agree."""
    env = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3"}
    digests = {
        subprocess.run(
            [sys.executable, "-c", FIT_IN_A_NEW_PROCESS], cwd=REPO, capture_output=True, text=True, check=True, env=env
        ).stdout
        for _ in range(2)
    }
    assert len(digests) == 1 and len(digests.pop().strip()) == 64
