"""Unpickle numpy arrays from untrusted bytes without running code.

A pickle may name any callable to rebuild an object; pickle.loads would call it. This
unpickler resolves only the names needed to rebuild an ndarray and refuses everything
else before it is imported, let alone called.
"""

import codecs
import io
import pickle

import numpy as np
from numpy._core.multiarray import _reconstruct

from mnist_pipeline.core.errors import PipelineError

# numpy 1 pickles name numpy.core.multiarray; numpy 2 moved it to numpy._core.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # Python 3 writes bytes into a protocol-2 pickle as codecs.encode(text, "latin1"): pure, no side effects.
    ("_codecs", "encode"): codecs.encode,
}


class UnsafePickleError(PipelineError):
    """The pickle asks for something other than plain numpy arrays."""


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to unpickle {module}.{name}: only numpy arrays are allowed from a downloaded pickle"
            ) from None


def loads(data: bytes):
    """Unpickle `data` (Python 2 pickles included) allowing only numpy arrays, tuples and lists."""
    return _ArraysOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
