"""TensorFlow without its C++ start-up chatter, Keras predictions without progress bars.

TensorFlow 2.21 logs its start-up lines (oneDNN, "Could not find cuda drivers") through Abseil,
which writes every message to stderr until absl::InitializeLog() is called; TensorFlow never calls
it, and Abseil reads no environment variable, so TF_CPP_MIN_LOG_LEVEL cannot hide them. Two of
the libraries `import tensorflow` loads (libtensorflow_framework and the profiler plugin) each
carry a copy of that code, so every line comes twice. The only place to drop them is the
process's own stderr while TensorFlow loads: `import_tensorflow` does that, and lets every
warning and error through but one: "failed call to cuInit" on a machine that has no CUDA driver,
which says again what the dropped line said. TF_CPP_MIN_LOG_LEVEL (set to 1 unless the user set
it) still governs TensorFlow's own logging: INFO off, warnings and errors on.

This file is also a pyfunc flavor: `log_model` logs a Keras model as mlflow.tensorflow does,
plus a copy of this file (standard library and numpy only) as the model's pyfunc loader, so
`mlflow models serve` loads TensorFlow quietly and predicts without a progress bar per request,
in any environment the model is served from. The served model takes the pixels as `predict`
does, (N, 28, 28) or flattened (N, 784), and refuses anything else with a message that describes
the request, never repeats it.
"""

import faulthandler
import json
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

# Abseil's notice that it writes to stderr, and its INFO lines ("I0000 00:00:1795477247.754250  8938 port.cc:153] ...").
ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
ABSL_INFO = re.compile(r"^I\d{4} [\d:.]+ +\d+ \S+:\d+\] ")
NO_CUDA_DRIVER = "Could not find cuda drivers on your machine, GPU will not be used."
# Logged as an error when CUDA is probed, on a machine without a driver: it repeats the line above.
CUINIT_FAILED = re.compile(r"^E\d{4} [\d:.]+ +\d+ \S+:\d+\] failed call to cuInit: ")


def import_tensorflow():
    """`import tensorflow`, with its start-up INFO lines kept out of stderr.

    CUDA is probed here too (listing the devices), so the error TensorFlow logs when a machine
    has no CUDA driver falls in the same window. TF_CPP_MIN_LOG_LEVEL=0 shows everything again.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's own INFO lines; warnings and errors pass
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0":
        import tensorflow as tf

        return tf
    with stderr_filtered(start_up_noise):
        import tensorflow as tf

        tf.config.list_physical_devices()
    return tf


def start_up_noise(lines: list[str]) -> list[bool]:
    """Which of these stderr lines are TensorFlow's start-up chatter."""
    no_driver = any(NO_CUDA_DRIVER in line for line in lines)
    return [
        line.rstrip("\n") == ABSL_PREAMBLE
        or bool(ABSL_INFO.match(line))
        or (no_driver and bool(CUINIT_FAILED.match(line)))
        for line in lines
    ]


@contextmanager
def stderr_filtered(is_noise):
    """Collect what this process (Python and C++ alike) writes to stderr, then pass on what is not noise.

    A crash inside still reaches the terminal: faulthandler writes to the real stderr meanwhile.
    """
    sys.stderr.flush()
    real = os.dup(2)
    crash_reports = faulthandler.is_enabled()
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        if crash_reports:
            faulthandler.enable(real)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(real, 2)
            if crash_reports:
                faulthandler.enable(sys.stderr)
            os.close(real)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            kept = [line for line, noise in zip(lines, is_noise(lines), strict=True) if not noise]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


# --- the pyfunc flavor ---------------------------------------------------------------------------
def log_model(model, **kwargs):
    """mlflow.tensorflow.log_model with this file as the model's pyfunc loader (what serving runs)."""
    from mlflow.models import Model

    return Model.log(artifact_path=None, flavor=sys.modules[__name__], model=model, **kwargs)


def save_model(model, path, mlflow_model, code_paths=None, **kwargs):
    """mlflow.tensorflow.save_model, then this file shipped in the model and named its pyfunc loader.

    The signature keeps its outputs only: MLflow enforces an input schema before the model sees a
    request, so a shape of (-1, 28, 28) refused (N, 784), and its 400 quoted the request's data.
    `pixels` checks the input instead.
    """
    import mlflow
    from mlflow.models import ModelSignature

    mlflow.tensorflow.save_model(
        model, path, mlflow_model=mlflow_model, code_paths=[__file__, *(code_paths or [])], **kwargs
    )
    mlflow_model.flavors["python_function"]["loader_module"] = Path(__file__).stem
    if mlflow_model.signature is not None:
        mlflow_model.signature = ModelSignature(outputs=mlflow_model.signature.outputs)
    mlflow_model.save(Path(path) / "MLmodel")


def _load_pyfunc(path, model_config=None):
    """The pyfunc loader: `mlflow models serve` and mlflow.pyfunc.load_model call it."""
    import_tensorflow()
    import mlflow.tensorflow

    return QuietKeras(mlflow.tensorflow._load_pyfunc(path).get_raw_model())  # the tensorflow flavor's own loader


class QuietKeras:
    """A Keras model behind pyfunc's predict, with no progress bar: one per request fills a server's log."""

    def __init__(self, keras_model):
        self.keras_model = keras_model

    def get_raw_model(self):
        return self.keras_model

    def predict(self, data, params=None):
        return self.keras_model.predict(pixels(data), verbose=0)


SIDE = 28
SHAPES = "(N, 28, 28) or (N, 784)"


def pixels(data) -> np.ndarray:
    """The request as uint8 images (N, 28, 28): numbers 0–255 shaped (N, 28, 28) or (N, 784), as
    `predict` reads a .npy file; anything else is refused (a 400 from `mlflow models serve`)."""
    array = data.to_numpy() if hasattr(data, "to_numpy") else data  # a DataFrame from dataframe_split
    if not isinstance(array, np.ndarray):
        raise refusal(f"the model takes one array of pixels {SHAPES}, got {type(data).__name__}")
    if array.ndim == 2 and array.shape[1] == SIDE * SIDE:
        array = array.reshape(-1, SIDE, SIDE)
    if array.ndim != 3 or array.shape[1:] != (SIDE, SIDE) or len(array) == 0:
        raise refusal(f"an array of shape {data.shape}; the model takes pixels 0–255 shaped {SHAPES}")
    if array.dtype.kind not in "uif":
        raise refusal(f"an array of {array.dtype}; the model takes pixel intensities 0–255 (numbers)")
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 255:
        raise refusal(
            f"an array of {array.dtype} holding values below 0, above 255, NaN or infinite; "
            "the model takes pixel intensities 0–255"
        )
    if array.dtype.kind == "f" and 0 < array.max() <= 1:
        raise refusal("an array of floats in [0, 1]; the model takes pixel intensities 0–255: multiply by 255")
    return np.rint(array).astype(np.uint8)


def refusal(message: str):
    """An MlflowException (a 400) whose body is `message` alone: MLflow's scoring server puts the
    request's data in front of any MlflowException's message (`Failed to predict data '[[…]]'`),
    and this one's serialize_as_json, what the server answers with, leaves that out."""
    from mlflow.exceptions import MlflowException

    error = MlflowException.invalid_parameter_value(message)
    error.serialize_as_json = lambda: json.dumps({"error_code": error.error_code, "message": message})
    return error
