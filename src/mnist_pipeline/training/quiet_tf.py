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
plus a copy of this file and of data/photo.py (numpy, scipy, Pillow; nothing of mnist_pipeline) as
the model's pyfunc loader and its preprocessing, and the unsure check's thresholds (unsure.json),
so `mlflow models serve` loads TensorFlow quietly, predicts without a progress bar per request,
and reads what people have, in any environment the model is served from. The served model takes:
- pixels already in MNIST's form, numbers 0–255 shaped (N, 28, 28) or flattened (N, 784), as
  `predict` reads a .npy file: they go to the model as they are;
- image files (PNG, JPEG, …), their bytes base64-encoded, one string per image: `{"inputs":
  [...]}` or `{"dataframe_split": {"columns": ["image"], "data": [[...], ...]}}`; each goes
  through photo.prepare, the code `predict` runs on an image file (background, polarity, lines,
  the main ink, fitted and centred).
It answers one row per input: digit, probability, unsure, probabilities (the ten). Anything else
is refused with a message that describes the request, never repeats it.
"""

import base64
import binascii
import faulthandler
import importlib
import io
import json
import os
import re
import sys
import tempfile
import warnings
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


def save_model(model, path, mlflow_model, code_paths=None, unsure=None, **kwargs):
    """mlflow.tensorflow.save_model, then this file and photo.py shipped in the model, this file
    named its pyfunc loader, and `unsure` (the thresholds measured at train time) saved beside it.

    The signature has outputs only: MLflow enforces an input schema before the model sees a
    request, so a shape of (-1, 28, 28) refused (N, 784), and its 400 quoted the request's data.
    `requested` checks the input instead.
    """
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import Array

    photo = _photo()
    mlflow.tensorflow.save_model(
        model, path, mlflow_model=mlflow_model, code_paths=[__file__, photo.__file__, *(code_paths or [])], **kwargs
    )
    mlflow_model.flavors["python_function"]["loader_module"] = Path(__file__).stem
    answer = [ColSpec("long", "digit"), ColSpec("double", "probability"), ColSpec("boolean", "unsure")]
    mlflow_model.signature = ModelSignature(outputs=Schema([*answer, ColSpec(Array("double"), "probabilities")]))
    mlflow_model.save(Path(path) / "MLmodel")
    if unsure is not None:
        (Path(path) / photo.THRESHOLDS_FILE).write_text(json.dumps(unsure, indent=2) + "\n")


def _photo():
    """data/photo.py: the package's module, or inside a logged model (where this file is a top-level
    module) the copy shipped beside this file."""
    if __package__:
        from mnist_pipeline.data import photo

        return photo
    return importlib.import_module("photo")


def _load_pyfunc(path, model_config=None):
    """The pyfunc loader: `mlflow models serve` and mlflow.pyfunc.load_model call it."""
    import_tensorflow()
    import mlflow.tensorflow

    keras_model = mlflow.tensorflow._load_pyfunc(path).get_raw_model()  # the tensorflow flavor's own loader
    thresholds = None  # a model logged before the thresholds were measured: the checks that need none
    for folder in (Path(path), Path(path).parent):  # MLflow hands the loader the model's folder or its data/
        if (folder / _photo().THRESHOLDS_FILE).is_file():
            thresholds = json.loads((folder / _photo().THRESHOLDS_FILE).read_text())
            break
    return QuietKeras(keras_model, thresholds)


class QuietKeras:
    """A Keras model behind pyfunc's predict, with no progress bar (one per request fills a
    server's log), photos prepared as `predict` prepares them, and the unsure check."""

    def __init__(self, keras_model, thresholds=None):
        self.keras_model = keras_model
        self.thresholds = thresholds

    def get_raw_model(self):
        return self.keras_model

    def predict(self, data, params=None):
        import pandas as pd

        photo = _photo()
        images, marks = requested(data)
        probabilities = self.keras_model.predict(images, verbose=0)
        return pd.DataFrame(
            {
                "digit": probabilities.argmax(axis=1),
                "probability": probabilities.max(axis=1).astype(float),
                "unsure": photo.unsure(photo.features(images, marks), probabilities, self.thresholds),
                "probabilities": [row.tolist() for row in probabilities.astype(float)],
            }
        )


SIDE = 28
SHAPES = "(N, 28, 28) or (N, 784)"
FORMS = f"pixels 0–255 shaped {SHAPES}, or image files' bytes base64-encoded, one string per image"


def requested(data) -> tuple[np.ndarray, np.ndarray]:
    """The request as uint8 images (N, 28, 28) and the separate marks seen in each: pixels as
    they are, image files prepared as `predict` prepares them."""
    photo = _photo()
    if isinstance(data, dict) and len(data) == 1:  # {"inputs": {"image": [...]}}: a named column
        data = next(iter(data.values()))
    array = data.to_numpy() if hasattr(data, "to_numpy") else data  # a DataFrame from dataframe_split
    if isinstance(array, list):
        array = np.asarray(array, dtype=object)
    if isinstance(array, np.ndarray) and array.dtype.kind in "OUS":  # strings: image files, base64
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 1 or len(array) == 0:
            raise refusal(f"an array of strings shaped {array.shape}; the model takes {FORMS}")
        digits = [image_of(item, i) for i, item in enumerate(array)]
        return np.stack([d.image for d in digits]), np.array([d.marks for d in digits])
    images = pixels(data)
    return images, photo.count_marks(images)


def image_of(item, i: int):
    """One image file's bytes, base64-encoded, in MNIST's form (photo.Prepared)."""
    from PIL import Image, UnidentifiedImageError

    photo = _photo()
    fix = "send each image file's bytes (PNG, JPEG, …) base64-encoded"
    try:
        raw = base64.b64decode(item, validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise refusal(f"input [{i}] is not base64 text; {fix}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as image:  # the header only: the size is known before decoding
                if image.width * image.height > photo.MAX_PIXELS:
                    raise refusal(
                        f"input [{i}] is an image of {image.width}×{image.height}; the model reads at most "
                        f"{photo.MAX_PIXELS:,} pixels: shrink it (a digit needs a few hundred pixels a side)"
                    )
                image.load()
                gray = photo.from_pillow(image)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        raise refusal(f"input [{i}] is not an image Pillow can read ({type(exc).__name__}); {fix}") from None
    return photo.prepare(gray)


def pixels(data) -> np.ndarray:
    """The request as uint8 images (N, 28, 28): numbers 0–255 shaped (N, 28, 28) or (N, 784), as
    `predict` reads a .npy file; anything else is refused (a 400 from `mlflow models serve`)."""
    array = data.to_numpy() if hasattr(data, "to_numpy") else data  # a DataFrame from dataframe_split
    if not isinstance(array, np.ndarray):
        raise refusal(f"the model takes {FORMS}, got {type(data).__name__}")
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
