import os
import pickle

import numpy as np
import pytest

from mnist_pipeline.data import safe_pickle


class RunsAShellCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_loads_numpy_arrays_in_tuples_like_the_classic_mnist_pickle():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    y = np.array([1, 2])
    ((x2, y2),) = safe_pickle.loads(pickle.dumps(((x, y),), protocol=2))
    assert np.array_equal(x2, x) and x2.dtype == np.float32
    assert np.array_equal(y2, y)


def test_refuses_a_pickle_that_would_run_code(tmp_path):
    marker = tmp_path / "pwned"
    data = pickle.dumps(RunsAShellCommand(marker), protocol=2)
    pickle_module_would_run_it = b"system" in data
    assert pickle_module_would_run_it
    with pytest.raises(safe_pickle.UnsafePickleError, match=r"refusing to unpickle posix\.system"):
        safe_pickle.loads(data)
    assert not marker.exists()


def test_refuses_other_globals_even_harmless_ones():
    with pytest.raises(safe_pickle.UnsafePickleError, match=r"collections\.OrderedDict"):
        safe_pickle.loads(pickle.dumps(__import__("collections").OrderedDict(a=1)))
