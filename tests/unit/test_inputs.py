"""What `predict` reads, checked on small files made here (no model, no network): images in every
Pillow mode read as the same digit, .npy batches in each accepted shape, inputs too large or
blank refused from their headers, before any decoding, what a multi-frame image gives, and model
sources refused before MLflow or TensorFlow load."""

import re
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, PngImagePlugin

from mnist_pipeline.core.errors import InputError
from mnist_pipeline.tools.predict import MAX_NPY_BYTES, MAX_PIXELS, load_inputs, load_model, to_mnist


@pytest.fixture(scope="module")
def seven() -> np.ndarray:
    """A light 7 on black, 56×56, with the grey edges of a real scan."""
    big = Image.new("L", (280, 280), 0)
    ImageDraw.Draw(big).line([(60, 60), (220, 60), (120, 240)], fill=255, width=24)
    return np.asarray(big.resize((56, 56), Image.Resampling.LANCZOS))


def as_mode(gray: np.ndarray, mode: str) -> Image.Image:
    """The same picture in another Pillow mode, stored the way that mode stores it."""
    if mode == "I;16":
        return Image.fromarray(gray.astype(np.uint16) * 257)  # 0–65535
    if mode == "I (16-bit values)":  # how Pillow before 10 opened 16-bit PNGs
        return Image.fromarray(gray.astype(np.int32) * 257)
    if mode == "I":
        return Image.fromarray(gray.astype(np.int32))
    if mode == "F (0-1)":
        return Image.fromarray(gray.astype(np.float32) / 255)
    if mode == "F":
        return Image.fromarray(gray.astype(np.float32))
    if mode == "LA transparent":  # black ink whose opacity is the stroke, on a transparent background
        return Image.merge("LA", (Image.new("L", gray.shape[::-1], 0), Image.fromarray(gray)))
    if mode == "La":
        return as_mode(gray, "LA transparent").convert("La")
    return Image.fromarray(gray).convert(mode)


MODES = [
    "I;16",
    "I (16-bit values)",
    "I",
    "F (0-1)",
    "F",
    "RGB",
    "RGBA",
    "LA",
    "P",
    "CMYK",
    "YCbCr",
    "LA transparent",
    "La",
]


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_reads_as_the_8_bit_grayscale_image_does(seven, mode):
    expected = to_mnist(Image.fromarray(seven), Path("8-bit"))
    image = as_mode(seven, mode)
    got = to_mnist(image, mode)
    assert np.abs(got.astype(int) - expected).max() <= 1, (image.mode, np.abs(got.astype(int) - expected).max())


def test_a_16_bit_png_file_reads_as_the_8_bit_one(seven, tmp_path):
    Image.fromarray(seven).save(tmp_path / "seven8.png")
    as_mode(seven, "I;16").save(tmp_path / "seven16.png")
    assert Image.open(tmp_path / "seven16.png").mode == "I;16"  # a real 16-bit grayscale PNG
    _, images, _ = load_inputs([tmp_path / "seven8.png", tmp_path / "seven16.png"])
    assert np.array_equal(images[0], images[1])
    assert len(np.unique(images[1])) > 10  # the grey edges kept, not cut to 0 and 255


def test_lab_reads_as_the_same_digit(seven):
    lab = Image.fromarray(seven).convert("RGB").convert("LAB")
    assert "A" in lab.getbands()  # a colour channel, not alpha: it must not be composited
    got, expected = to_mnist(lab, Path("lab")), to_mnist(Image.fromarray(seven), Path("8-bit"))
    assert np.corrcoef(got.ravel(), expected.ravel())[0, 1] > 0.98


def png_of_zeros(path, width: int, height: int) -> None:
    """A valid 8-bit grayscale PNG, compressed row by row: no image of that size is held in memory."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row, deflate = bytes(1 + width), zlib.compressobj(1)
    data = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", data)
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("side", "size"),
    [(13000, "13000×13000"), (20000, "400,000,000 pixels")],
    ids=["over-the-limit", "over-pillows-own"],
)
def test_a_huge_image_is_refused_from_its_header(tmp_path, side, size):
    path = tmp_path / "huge.png"
    png_of_zeros(path, side, side)
    started = time.monotonic()
    with pytest.raises(InputError) as error:
        load_inputs([path])
    assert time.monotonic() - started < 0.5  # decoding it would take seconds and gigabytes
    assert str(error.value) == (
        f"{path}: the image is too large ({size}); predict reads at most {MAX_PIXELS:,} "
        "pixels: shrink it (a digit needs a few hundred pixels a side)"
    )


def test_an_image_at_the_limit_is_read(tmp_path):
    path = tmp_path / "wide.bmp"
    image = np.zeros((10, MAX_PIXELS // 10), np.uint8)
    image[3:7, 1000:1004] = 255
    Image.fromarray(image).save(path)
    assert load_inputs([path])[1].shape == (1, 28, 28)


def test_npy_shaped_28_by_28_is_one_image(seven, tmp_path):
    digit = to_mnist(Image.fromarray(seven), Path("seven"))
    np.save(tmp_path / "one.npy", digit)
    names, images, _ = load_inputs([tmp_path / "one.npy"])
    assert names == [str(tmp_path / "one.npy")]
    assert images.dtype == np.uint8 and np.array_equal(images, digit[None])


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.int64])
def test_npy_shaped_n_by_784_is_n_flattened_images(seven, tmp_path, dtype):
    digit = to_mnist(Image.fromarray(seven), Path("seven"))
    batch = np.stack([digit, np.roll(digit, 3, axis=1), digit.T])
    np.save(tmp_path / "flat.npy", batch.reshape(3, 784).astype(dtype))
    names, images, _ = load_inputs([tmp_path / "flat.npy"])
    assert names == [f"{tmp_path / 'flat.npy'}[{i}]" for i in range(3)]
    assert images.dtype == np.uint8 and np.array_equal(images, batch)


def test_a_huge_npy_is_refused_from_its_header(tmp_path):
    """1.5 GB of zeros (a sparse file: nothing is written but the header)."""
    path = tmp_path / "zeros.npy"
    np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(1_913_266, 28, 28)).flush()
    assert path.stat().st_size > 1.5e9
    started = time.monotonic()
    with pytest.raises(InputError) as error:
        load_inputs([path])
    assert time.monotonic() - started < 0.5
    assert str(error.value) == (
        f"{path}: 1,913,266 images of uint8, 1,431 MiB; predict reads at most "
        f"{MAX_NPY_BYTES >> 20} MiB per file: split the batch into smaller files"
    )


BLANK = [
    ("zeros", np.zeros((28, 28), np.uint8), "the image is blank (one colour); nothing to read"),
    ("white", np.full((1, 784), 255.0), "the image is blank (one colour); nothing to read"),
    ("one of three", "mixed", "one of its images is blank (one colour, the first [1]); nothing to read"),
    ("all of three", np.full((3, 28, 28), 7, np.uint8), "3 of its 3 images are blank (one colour, the first [0])"),
]


@pytest.mark.parametrize(("name", "array", "expected"), BLANK, ids=[b[0] for b in BLANK])
def test_blank_arrays_are_refused_like_blank_images(seven, tmp_path, name, array, expected):
    if isinstance(array, str):
        digit = to_mnist(Image.fromarray(seven), Path("seven"))
        array = np.stack([digit, np.full_like(digit, 20), digit])
    np.save(tmp_path / "batch.npy", array)
    with pytest.raises(InputError, match=r"^" + re.escape(f"{tmp_path / 'batch.npy'}: {expected}")):
        load_inputs([tmp_path / "batch.npy"])


def test_an_array_of_records_is_refused_before_it_is_read(tmp_path):
    np.save(tmp_path / "records.npy", np.zeros((2, 28, 28), dtype=[("a", "f4"), ("b", "f4")]))
    with pytest.raises(InputError, match=r"array of .*; expected pixel intensities 0–255"):
        load_inputs([tmp_path / "records.npy"])


def test_a_png_whose_text_chunk_inflates_past_pillows_limit_is_refused_in_one_line(seven, tmp_path):
    """20 MiB of metadata in a 20 KB zTXt chunk: Pillow stops at 1 MiB with a ValueError."""
    path = tmp_path / "bomb.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "a" * (20 << 20), zip=True)
    Image.fromarray(seven).save(path, pnginfo=info)
    assert path.stat().st_size < 100_000
    with pytest.raises(InputError) as error:
        load_inputs([path])
    assert str(error.value) == (
        f"{path}: a text chunk in it (PNG metadata) inflates past Pillow's limit (Decompressed data too large "
        "for PngImagePlugin.MAX_TEXT_CHUNK); save the image again without its metadata"
    )


@pytest.mark.parametrize(("name", "count"), [("pages.tiff", 200), ("animated.gif", 12), ("animated.png", 3)])
def test_a_multi_frame_image_reads_its_first_frame_and_says_so(seven, tmp_path, caplog, name, count):
    first = Image.fromarray(seven)
    others = [Image.fromarray(np.roll(seven, 5 * i, axis=1)) for i in range(1, count)]
    first.save(tmp_path / name, save_all=True, append_images=others)
    first.save(tmp_path / "first.png")
    _, images, _ = load_inputs([tmp_path / name, tmp_path / "first.png"])
    assert np.abs(images[0].astype(int) - images[1]).max() <= 1  # the first frame (a GIF's palette may shift a level)
    kind = Image.open(tmp_path / name).format
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / name}: {kind} image of {count} frames; predict reads the first only: "
        "save each frame you mean as an image of its own"
    ]


def test_a_cameras_mpo_jpeg_reads_without_a_warning(seven, tmp_path, caplog):
    """A multi-picture JPEG (phones and cameras write them): the second frame is a preview of the first."""
    image = Image.fromarray(seven).convert("RGB")
    image.save(tmp_path / "photo.jpg", format="MPO", save_all=True, append_images=[image.resize((28, 28))])
    assert getattr(Image.open(tmp_path / "photo.jpg"), "n_frames") == 2  # noqa: B009 - typeshed knows no n_frames
    load_inputs([tmp_path / "photo.jpg"])
    assert caplog.records == []


def mlmodel_folder(folder: Path, text: str) -> Path:
    folder.mkdir()
    (folder / "MLmodel").write_text(text)
    return folder


MODEL_SOURCES = [
    (
        lambda tmp: str(mlmodel_folder(tmp / "bad", "flavors: [\n  tensorflow: keras: 3\n")),
        "its MLmodel is not valid YAML at line 2 (expected ',' or ']', but got ':'); restore the folder, "
        "or give the model's .keras file",
    ),
    (
        lambda tmp: str(mlmodel_folder(tmp / "sk", "flavors:\n  python_function: {}\n  sklearn: {}\n")),
        "not a Keras model: its MLmodel names no tensorflow flavor (flavors: python_function, sklearn); "
        "give a model logged with mlflow.tensorflow, as the train stage logs them",
    ),
    (lambda tmp: str(mlmodel_folder(tmp / "list", "- 1\n")), "names no tensorflow flavor (flavors: none)"),
    (lambda tmp: "s3://nobucket/model", "predict does not load s3: URIs; give a .keras file, a folder holding"),
    (lambda tmp: "http://127.0.0.1:9/model", "predict does not load http: URIs; give a .keras file, a folder"),
    (lambda tmp: "gs://b/m", "then give --model DIR)"),
    (lambda tmp: str(tmp / "nothing"), "no model there; give a .keras file, a folder holding model.keras or"),
]


@pytest.mark.parametrize(
    ("make", "expected"), MODEL_SOURCES, ids=["yaml", "flavor", "list", "s3", "http", "gs", "none"]
)
def test_a_model_source_predict_cannot_load_is_refused_before_mlflow_loads(tmp_path, make, expected):
    source = make(tmp_path)
    with pytest.raises(InputError) as error:
        load_model(source, tmp_path)
    assert str(error.value).startswith(f"{source}: ") and expected in str(error.value), str(error.value)
