"""Predict digits for image files or .npy batches with a trained model from a path, a run or the registry."""

import argparse
import json
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import yaml
from PIL import Image, UnidentifiedImageError

from mnist_pipeline.core.command import layout_of
from mnist_pipeline.core.errors import InputError, PipelineError, first_line
from mnist_pipeline.core.layout import MODEL_FILE, Layout
from mnist_pipeline.data import photo
from mnist_pipeline.evaluation.keras_file import load_keras, restore_fix
from mnist_pipeline.tools.printable import printable

SIDE = 28
NPY_SHAPES = "(28, 28), (N, 28, 28) or (N, 784)"
BLANK = 32  # an image whose ink differs from its paper by less than this is one colour: nothing to read
# Far below Pillow's own guard (89 million pixels, 2 bytes each and more once decoded): a digit
# needs a few hundred pixels a side, a 24-megapixel photo still passes. The served model's too.
MAX_PIXELS = photo.MAX_PIXELS
MAX_NPY_BYTES = 256 << 20  # 70,000 float32 images fit; an array larger than this is refused unread

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="INPUT",
        help="PNG/JPEG/… images of any size and mode, or .npy arrays (28, 28), (N, 28, 28), (N, 784)",
    )
    parser.add_argument(
        "--model",
        default=str(Layout(Path()).model_dir("mlp")),
        metavar="SOURCE",
        help="a .keras file or models/<name> folder, runs:/<run id>/mlp, models:/<model id>, "
        "or models:/mnist-mlp@champion (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> None:
    """Needs no params.yaml, only a model."""
    from mnist_pipeline.training.quiet_tf import import_tensorflow

    try:
        names, images, marks = load_inputs(args.inputs)  # bad inputs fail before TensorFlow loads
        import_tensorflow()
        model, folder = load_model(args.model, layout_of(args).root)
    except InputError as exc:  # a name (or a library's message quoting it) may hold a newline or an escape code
        raise InputError(printable(str(exc))) from None
    thresholds = load_thresholds(folder, args.model)
    probabilities, flagged = answers(model, images, marks, thresholds)
    shown = [printable(name) for name in names]  # a name must not forge a row: "ok\nfake.png  9  1.0000"
    width = max(len(name) for name in shown)
    print(f"{'input':<{width}}  digit  probability  unsure")
    for name, row, unsure in zip(shown, probabilities, flagged, strict=True):
        print(f"{name:<{width}}  {row.argmax():>5}  {row.max():>11.4f}  {'yes' if unsure else 'no':>6}")


def answers(model, images: np.ndarray, marks: np.ndarray, thresholds: dict | None) -> tuple[np.ndarray, np.ndarray]:
    """The model's probabilities for each image, and which answers the unsure check flags."""
    probabilities = model.predict(images, batch_size=1024, verbose=0)
    return probabilities, photo.unsure(photo.features(images, marks), probabilities, thresholds)


def load_inputs(paths: list[Path]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Names, uint8 images (N, 28, 28) and the separate marks seen in each (for the unsure check),
    for image files and .npy batches, in the order given. A .npy batch is taken as MNIST's form
    already (28×28, fitted and centred): it goes to the model as it is."""
    names, batches, marks = [], [], []
    for path in paths:
        if not os.path.isfile(path):  # os.path: False, not OSError, for a name too long to be a file
            raise InputError(f"{path}: no such file; give image files (PNG, JPEG, …) or .npy arrays")
        if path.stat().st_size == 0:
            raise InputError(f"{path}: the file is empty; give an image or a .npy array")
        if path.suffix.lower() == ".npy":
            batch = read_npy(path)
            names += [f"{path}[{i}]" for i in range(len(batch))] if len(batch) > 1 else [str(path)]
            marks.append(photo.count_marks(batch))
        else:
            digit = read_image(path)
            batch = digit.image[None]
            names.append(str(path))
            marks.append(np.array([digit.marks]))
        batches.append(batch)
    return names, np.concatenate(batches), np.concatenate(marks)


def read_npy(path: Path) -> np.ndarray:
    try:  # memory-mapped: shape and type are checked before any of the data is read
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:  # a pickle, a truncated file, not .npy at all
        raise InputError(f"{path}: not a readable .npy array ({first_line(exc)}); save one with numpy.save") from None
    if array.ndim == 2 and array.shape == (SIDE, SIDE):
        array = array[None]
    elif array.ndim == 2 and array.shape[1] == SIDE * SIDE:
        array = array.reshape(-1, SIDE, SIDE)
    if array.ndim != 3 or array.shape[1:] != (SIDE, SIDE) or len(array) == 0:
        raise InputError(f"{path}: array of shape {array.shape}; expected {NPY_SHAPES}")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise InputError(f"{path}: array of {array.dtype}; expected pixel intensities 0–255 (uint8)")
    if array.nbytes > MAX_NPY_BYTES:
        raise InputError(
            f"{path}: {len(array):,} images of {array.dtype}, {array.nbytes / 2**20:,.0f} MiB; predict "
            f"reads at most {MAX_NPY_BYTES >> 20} MiB per file: split the batch into smaller files"
        )
    array = np.array(array)  # now read it
    if not np.isfinite(array).all():
        raise InputError(f"{path}: the array holds NaN or infinite values; expected pixel intensities 0–255")
    low, high = array.min(), array.max()
    if low < 0 or high > 255:
        raise InputError(f"{path}: values from {low} to {high}; expected pixel intensities 0–255 (uint8)")
    if np.issubdtype(array.dtype, np.floating) and 0 < high <= 1:
        raise InputError(
            f"{path}: values from {low} to {high} look scaled to [0, 1]; the model takes 0–255: multiply by 255"
        )
    blank = np.flatnonzero(array.max(axis=(1, 2)) - array.min(axis=(1, 2)) < BLANK)
    if len(blank):
        which = (
            "the image is"
            if len(array) == 1
            else (f"{len(blank):,} of its {len(array):,} images are" if len(blank) > 1 else "one of its images is")
        )
        first = "" if len(array) == 1 else f", the first [{blank[0]}]"
        raise InputError(f"{path}: {which} blank (one colour{first}); nothing to read")
    return np.rint(array).astype(np.uint8)


def read_image(path: Path) -> photo.Prepared:
    try:
        with warnings.catch_warnings():
            # Pillow warns from 89 million pixels (a page on stderr); the limit below refuses far sooner.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:  # reads the header only: the size is known before decoding
                if image.width * image.height > MAX_PIXELS:
                    raise InputError(too_large(path, f"{image.width}×{image.height}"))
                warn_if_frames(image, path)
                image.load()
    except Image.DecompressionBombError as exc:  # over twice Pillow's limit: Image.open itself refuses
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        raise InputError(too_large(path, f"{int(pixels[1]):,} pixels" if pixels else first_line(exc))) from None
    except ValueError as exc:
        if "MAX_TEXT" in str(exc):  # Pillow's guard against a PNG text chunk (zTXt, iTXt) that inflates past 1 MiB
            raise InputError(
                f"{path}: a text chunk in it (PNG metadata) inflates past Pillow's limit ({first_line(exc)}); "
                "save the image again without its metadata"
            ) from None
        raise InputError(
            f"{path}: not an image Pillow can read ({first_line(exc)}); give PNG, JPEG or a .npy array"
        ) from None
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"{path}: not an image Pillow can read ({exc}); give PNG, JPEG or a .npy array") from None
    return prepared(image, path)


def warn_if_frames(image: Image.Image, path: Path) -> None:
    """An animated GIF or PNG, a multi-page TIFF: predict reads the first frame, what a viewer shows
    first, and says so, as the others may hold the digit meant. A phone's MPO JPEG is not warned
    about: its second frame is a preview of the first."""
    frames = getattr(image, "n_frames", 1)  # counted from the frames' headers, none decoded
    if frames > 1 and image.format != "MPO":
        log.warning(
            "%s: %s image of %d frames; predict reads the first only: save each frame you mean as an image of its own",
            printable(str(path)),
            image.format,
            frames,
        )


def too_large(path: Path, size: str) -> str:
    return (
        f"{path}: the image is too large ({size}); predict reads at most {MAX_PIXELS:,} pixels: "
        "shrink it (a digit needs a few hundred pixels a side)"
    )


def to_mnist(image: Image.Image, path: Path) -> np.ndarray:
    """Any size and mode → MNIST's form (data/photo.py, the code the served model runs too)."""
    return prepared(image, path).image


def prepared(image: Image.Image, path: Path) -> photo.Prepared:
    gray = photo.from_pillow(image)
    if np.ptp(gray) < BLANK:
        raise InputError(f"{path}: the image is blank (one colour); nothing to read")
    return photo.prepare(gray)


# What --model takes, for the error that refuses anything else.
SOURCES = (
    f"a .keras file, a folder holding {MODEL_FILE} or an MLmodel, runs:/<run id>/<model>, "
    "models:/<model id>, models:/<name>@<alias> or models:/<name>/<version>"
)
MAX_MLMODEL_BYTES = 1 << 20  # MLflow writes about 1 KiB


def load_model(source: str, root: Path) -> tuple[Any, Path]:
    """A Keras model from a .keras file, a folder holding one (models/<name>), an MLflow model
    folder, or an MLflow URI: runs:/<run id>/<model key> (the run logs it under its key, e.g. mlp),
    models:/<model id>, models:/<name>@champion, models:/<name>/<version>, resolved against the
    tracking store of the repository at `root`; and the folder it came from (where its unsure
    check's thresholds lie). Other URIs (s3://, http://, …) are refused: a
    team's models come through its tracking server, as runs:/ and models:/."""
    scheme = urlparse(source).scheme
    if scheme in ("", "file") or os.path.exists(source):  # a local name with a colon is a path too
        path = Path(source.removeprefix("file://"))
        if path.is_dir() and (path / MODEL_FILE).is_file():
            path = path / MODEL_FILE
        if path.is_file() and path.suffix == ".keras":
            fix = (
                restore_fix(path.parent)
                if path.resolve().parent.parent == (root / "models").resolve()
                else "give a model saved by Keras 3 (model.save('name.keras'))"
            )
            try:
                return load_keras(path, fix), path.parent
            except PipelineError as exc:  # a model named on the command line: the user's input, exit 2
                raise InputError(str(exc)) from None
        if not (path / "MLmodel").is_file():
            raise InputError(f"{source}: no model there; give {SOURCES}")
        return load_mlflow_folder(path, source), path
    if scheme not in ("runs", "models"):
        raise InputError(
            f"{source}: predict does not load {scheme}: URIs; give {SOURCES} (a model stored elsewhere: "
            "download it with `mlflow artifacts download -u URI -d DIR`, then give --model DIR)"
        )
    import mlflow
    from mlflow.exceptions import MlflowException

    from mnist_pipeline.tracking.store import tracking_uri

    mlflow.set_tracking_uri(tracking_uri(root))
    try:  # a local store's folder is used in place; a remote one's is downloaded to a temporary folder
        local = mlflow.artifacts.download_artifacts(artifact_uri=source)
    except MlflowException as exc:
        raise InputError(
            f"{source}: cannot load the model from {mlflow.get_tracking_uri()}: {first_line(exc)}"
        ) from None
    except ModuleNotFoundError as exc:  # the artifact store's client (boto3 for S3, …) is not installed
        raise InputError(
            f"{source}: its artifact store needs the Python package {exc.name}, which is not installed; "
            f"install it (pip install {exc.name}) or run predict where the store's client is installed"
        ) from None
    except Exception as exc:  # noqa: BLE001 - the artifact store's own client: botocore, HTTP, …
        raise InputError(
            f"{source}: cannot download the model from its artifact store ({type(exc).__name__}: {first_line(exc)}); "
            "check the store's address and your credentials for it"
        ) from None
    model = load_mlflow_folder(Path(local), source)
    if scheme == "runs":
        warn_if_deleted(source.removeprefix("runs:").lstrip("/").split("/")[0], source)
    return model, Path(local)


def load_mlflow_folder(path: Path, source: str):
    """The Keras model in an MLflow model folder, once its MLmodel shows a tensorflow flavor."""
    mlmodel = path / "MLmodel"
    fix = "restore the folder, or give the model's .keras file"
    if mlmodel.stat().st_size > MAX_MLMODEL_BYTES:
        raise InputError(f"{source}: its MLmodel is {mlmodel.stat().st_size:,} bytes, not one MLflow wrote; {fix}")
    try:
        meta = yaml.safe_load(mlmodel.read_bytes())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise InputError(
            f"{source}: its MLmodel is not valid YAML{where} ({getattr(exc, 'problem', None) or first_line(exc)}); "
            f"{fix}"
        ) from None
    flavors = meta.get("flavors") if isinstance(meta, dict) else None
    if not isinstance(flavors, dict) or "tensorflow" not in flavors:
        found = ", ".join(map(str, flavors)) if isinstance(flavors, dict) and flavors else "none"
        raise InputError(
            f"{source}: not a Keras model: its MLmodel names no tensorflow flavor (flavors: {found}); "
            "give a model logged with mlflow.tensorflow, as the train stage logs them"
        )
    import mlflow

    try:
        return mlflow.tensorflow.load_model(str(path))
    except Exception as exc:  # noqa: BLE001 - a damaged folder surfaces as MlflowException, OSError, Keras errors, …
        raise InputError(
            f"{source}: cannot load the Keras model in it ({type(exc).__name__}: {first_line(exc)}); {fix}"
        ) from None


def warn_if_deleted(run_id: str, source: str) -> None:
    """A deleted run's model still loads until `mlflow gc` removes it: predict with it, but say so."""
    from mlflow.tracking import MlflowClient

    if MlflowClient().get_run(run_id).info.lifecycle_stage == "deleted":
        log.warning(
            "%s: run %s is deleted (in MLflow's trash, where `mlflow gc` removes its model for good); "
            "predicting with it anyway: restore it with `mlflow runs restore --run-id %s`, or give a model "
            "of a live run, e.g. models:/mnist-<model>@champion",
            printable(source),
            run_id,
            run_id,
        )


def load_thresholds(folder: Path, source: str) -> dict | None:
    """The unsure check's thresholds saved beside the model at train time; a model trained before
    they were measured still predicts, with the checks that need no measuring, and says so."""
    path = folder / photo.THRESHOLDS_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        log.warning(
            "%s: no readable %s beside the model (trained before the unsure check was measured); the unsure "
            "column flags only images with no ink or several marks: retrain it to measure the rest",
            printable(source),
            photo.THRESHOLDS_FILE,
        )
        return None
