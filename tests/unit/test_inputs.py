"""What `predict` reads, checked on small files made here (no model, no network): images in every
Pillow mode read as the same digit, .npy batches in each accepted shape, and inputs too large or
blank refused from their headers, before any decoding."""

import re
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mnist_pipeline.core.errors import InputError
from mnist_pipeline.tools.predict import MAX_NPY_BYTES, MAX_PIXELS, load_inputs, to_mnist


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
    _, images = load_inputs([tmp_path / "seven8.png", tmp_path / "seven16.png"])
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
    names, images = load_inputs([tmp_path / "one.npy"])
    assert names == [str(tmp_path / "one.npy")]
    assert images.dtype == np.uint8 and np.array_equal(images, digit[None])


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.int64])
def test_npy_shaped_n_by_784_is_n_flattened_images(seven, tmp_path, dtype):
    digit = to_mnist(Image.fromarray(seven), Path("seven"))
    batch = np.stack([digit, np.roll(digit, 3, axis=1), digit.T])
    np.save(tmp_path / "flat.npy", batch.reshape(3, 784).astype(dtype))
    names, images = load_inputs([tmp_path / "flat.npy"])
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
