"""data/photo.py on photos this test makes: a digit drawn clean, then put on paper as a camera sees
it (a lighting gradient, a shadow, tinted paper, noise, blur, ruled or squared paper, marks in the
margin, off the middle, thin or thick strokes); each must come out as the clean digit does. And the
served model's reading of a request (base64 image files, pixels), without TensorFlow."""

import base64
import io

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from PIL import Image, ImageDraw
from scipy import ndimage

from mnist_pipeline.data import photo
from mnist_pipeline.training import quiet_tf


def drawn(digit: str, width: int = 24) -> np.ndarray:
    """A digit drawn as a pen would, light (1.0) on black, 280×280."""
    image = Image.new("L", (280, 280), 0)
    draw = ImageDraw.Draw(image)
    if digit == "3":
        draw.arc([70, 30, 210, 140], 200, 90, fill=255, width=width)
        draw.arc([60, 130, 220, 260], 270, 160, fill=255, width=width)
    elif digit == "7":
        draw.line([(60, 50), (220, 50), (120, 250)], fill=255, width=width, joint="curve")
    return np.asarray(image, np.float32) / 255


def on_paper(ink, page=(360, 480), at=(40, 100), lo=130.0, hi=220.0, noise=6.0, blur=0.0, ink_level=30.0, **extra):
    """The drawing put on a page lit from one side (grey `lo` → `hi` across it), photographed."""
    rng = np.random.default_rng(0)
    height, width = page
    paper = np.tile(np.linspace(lo, hi, width, dtype=np.float32), (height, 1))
    if extra.get("shadow"):  # a hand's shadow over the left third, its edge across the digit
        paper[:, : width // 3] *= 0.55
    full = np.zeros(page, np.float32)
    full[at[0] : at[0] + ink.shape[0], at[1] : at[1] + ink.shape[1]] = ink
    # Ruled or squared paper: lines `thick` pixels wide every `every`, printed at `line` of the ink's
    # strength, `tilt` degrees off level as a phone held askew sees them.
    rows, cols = np.indices(page, dtype=np.float32)
    tilt = np.deg2rad(extra.get("tilt", 0.0))
    line, every, thick = extra.get("line", 0.55), extra.get("every", 32), extra.get("thick", 2)

    def lines(across: np.ndarray) -> np.ndarray:  # each pixel covered by the share of it a line covers
        distance = np.abs((across + every / 2) % every - every / 2)
        return line * np.clip(thick / 2 + 0.5 - distance, 0, 1)

    if extra.get("ruled") or extra.get("squared"):
        full = np.maximum(full, lines(rows * np.cos(tilt) - cols * np.sin(tilt) - 20))
    if extra.get("squared"):
        full = np.maximum(full, lines(cols * np.cos(tilt) + rows * np.sin(tilt) - 12))
    if extra.get("margin"):  # a dot and a short dash far from the digit
        full[height - 30 : height - 20, 10:20] = 1
        full[12:18, width - 50 : width - 15] = 1
    image = paper * (1 - full) + ink_level * full
    if blur:
        image = ndimage.gaussian_filter(image, blur)
    return np.clip(image + rng.normal(0, noise, page), 0, 255)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Their likeness, blurred by a pixel first: a thin stroke a pixel apart is the same digit."""
    a, b = (ndimage.gaussian_filter(x.astype(float), 1) for x in (a, b))
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


CONDITIONS: dict[str, dict] = {
    "gradient 130→220, noise": {},
    "steep gradient 60→240": {"lo": 60, "hi": 240},
    "shadow": {"shadow": True},
    "tinted paper": {"lo": 170, "hi": 170},
    "strong noise": {"noise": 18},
    "blur": {"blur": 3},
    "faint pencil": {"ink_level": 150, "lo": 200, "hi": 235},
    "off-centre": {"at": (70, 190)},
    "small on a large page": {"page": (900, 1200), "at": (500, 200)},
    "ruled paper": {"ruled": True, "lo": 190, "hi": 230},
    "squared paper": {"squared": True, "lo": 190, "hi": 230},
    "marks in the margin": {"margin": True},
}


@pytest.mark.parametrize("digit", ["3", "7"])
@pytest.mark.parametrize("condition", CONDITIONS, ids=list(CONDITIONS))
def test_a_photo_becomes_the_clean_digit(digit, condition):
    """Before: predict's to_mnist left a lighting gradient as a grey blob around the digit (the
    gradient '3' correlated 0.30 with its clean form, and 22 of these 24 photos fell below 0.9)."""
    clean = photo.prepare(drawn(digit) * 255)
    got = photo.prepare(on_paper(drawn(digit), **CONDITIONS[condition]))
    assert got.found and got.marks == 1
    assert got.image.shape == (28, 28) and got.image.dtype == np.uint8
    assert correlation(got.image, clean.image) > 0.9


def cropped(digit: str, side: int) -> np.ndarray:
    """The drawn digit in a tight crop of `side` pixels (a phone photo cut to the digit), 0–1."""
    return np.asarray(Image.fromarray(drawn(digit)).resize((side, side), Image.Resampling.BOX))


@pytest.mark.parametrize("digit", ["3", "7"])
@pytest.mark.parametrize("paper", ["ruled", "squared"])
@pytest.mark.parametrize("tilt", [-3, 3])
def test_paper_lines_askew_in_a_small_photo_are_taken_out(paper, tilt, digit):
    """A 128-pixel photo, the digit half its height, the paper's lines 18 pixels apart and 3° off
    level, at half the ink's strength, as the benchmark's ruled-paper photos are. Before: the lines
    were looked for as level runs, and those a few degrees off joined the digit (6 of these 8 came
    out below 0.9; the benchmark's mlp read 0.946 of its ruled-paper photos)."""
    ink = cropped(digit, 64)
    page = {"page": (128, 128), "at": (32, 32), "lo": 200, "hi": 225, "noise": 3, "blur": 0.6, "ink_level": 100}
    got = photo.prepare(on_paper(ink, **page, **{paper: True}, tilt=tilt, every=18, thick=1.5))
    assert got.marks == 1 and correlation(got.image, photo.prepare(ink * 255).image) > 0.9


@pytest.mark.parametrize("side", [64, 100, 200])
def test_a_digit_in_a_tight_crop_keeps_its_strokes(side):
    """A 3's arcs span most of a tight crop's width, as a paper's line does, but stop short of its
    edges: they are strokes, not lines (a first line finder that did not ask for the ends cut them)."""
    for digit in "37":
        got = photo.prepare(cropped(digit, side) * 255)
        assert correlation(got.image, photo.prepare(drawn(digit) * 255).image) > 0.97


@pytest.mark.parametrize("width", [6, 60])
def test_thin_and_thick_strokes(width):
    clean = photo.prepare(drawn("3", width) * 255)
    got = photo.prepare(on_paper(drawn("3", width)))
    assert got.marks == 1 and correlation(got.image, clean.image) > 0.9


def test_light_chalk_on_a_dark_board_reads_as_ink_on_paper():
    board = 40 + 30 * np.linspace(0, 1, 480)[None, :] + np.zeros((360, 1))
    full = np.zeros((360, 480), np.float32)
    full[40:320, 100:380] = drawn("7")
    got = photo.prepare(board * (1 - full) + 230 * full)
    assert correlation(got.image, photo.prepare(drawn("7") * 255).image) > 0.9


def test_an_mnist_form_digit_stays_itself():
    digit = photo.prepare(drawn("3") * 255).image
    assert correlation(photo.prepare(digit).image, digit) > 0.95
    assert photo.count_marks(digit[None]).tolist() == [1]


def test_what_is_not_one_digit_is_counted():
    rng = np.random.default_rng(0)
    blank = photo.prepare(np.full((200, 200), 200.0) + rng.normal(0, 3, (200, 200)))
    assert not blank.found and blank.marks == 0
    three_digits = np.concatenate([drawn("3"), drawn("7"), drawn("3")], axis=1)
    assert photo.prepare(on_paper(three_digits, page=(360, 900), at=(40, 30))).marks == 3
    assert photo.count_marks(np.stack([photo.prepare(three_digits * 255).image, np.zeros((28, 28))])).tolist() == [
        1,  # fitted into 20×20 side by side, they touch: one wide mark, which the ink statistics flag
        0,
    ]


THRESHOLDS = {"confidence": 0.5, "ranges": {"ink": [0.04, 0.3], "height": [10, 20], "width": [3, 20]}, "max_marks": 1}


def test_unsure_flags_no_ink_several_marks_unusual_ink_and_low_confidence():
    digit = photo.prepare(drawn("3") * 255).image
    strip = photo.prepare(np.random.default_rng(1).integers(0, 256, (1, 50)).astype(float))
    images = np.stack([digit, digit, digit, np.zeros_like(digit), strip.image])
    marks = np.array([1, 1, 3, 0, strip.marks])
    sure, unsure = np.eye(10)[3] * 0.9 + 0.01, np.full(10, 0.1)
    probabilities = np.stack([sure, unsure, sure, sure, sure])
    flagged = photo.unsure(photo.features(images, marks), probabilities, THRESHOLDS)
    assert flagged.tolist() == [False, True, True, True, True]
    # A model trained before the thresholds were measured: no ink and several marks only.
    assert photo.unsure(photo.features(images, marks), probabilities, None).tolist() == [False, False, True, True, True]


def test_thresholds_are_measured_on_digits_and_answers():
    rng = np.random.default_rng(0)
    digits = np.stack([photo.prepare(drawn(d, w) * 255).image for d in "37" for w in (12, 20, 28, 36, 44)] * 10)
    labels = np.array([3] * 5 + [7] * 5)[np.arange(100) % 10]
    probabilities = rng.dirichlet(np.ones(10) * 0.2, 100)
    probabilities[np.arange(100), labels] += 1
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    measured = photo.measure(digits, probabilities, labels)
    assert measured["confidence"] == pytest.approx(np.quantile(probabilities.max(axis=1), photo.UNSURE_SHARE))
    assert measured["max_marks"] == 1
    low, high = measured["ranges"]["ink"]
    assert 0 < low < high < 0.5
    assert measured["measured_on"]["validation_images"] == 100
    assert 0 < measured["measured_on"]["flagged_share"] < 0.1


def png_base64(gray: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_the_served_model_reads_base64_image_files_as_predict_does():
    """The forms MLflow's scoring server hands the pyfunc: {"inputs": [...]} gives an array of
    strings, {"dataframe_split": {"columns": ["image"], ...}} a one-column DataFrame."""
    gray = on_paper(drawn("3"))
    expected = photo.prepare(np.asarray(Image.fromarray(gray.astype(np.uint8)), np.float32)).image
    text = png_base64(gray)
    for data in (np.array([text, text]), pd.DataFrame({"image": [text, text]}), {"image": np.array([text, text])}):
        images, marks = quiet_tf.requested(data)
        assert images.shape == (2, 28, 28) and np.array_equal(images[0], expected) and marks.tolist() == [1, 1]
    pixels = np.stack([expected, expected]).reshape(2, 784)
    images, marks = quiet_tf.requested(pixels)  # MNIST's form already: as it is
    assert np.array_equal(images[0], expected) and marks.tolist() == [1, 1]


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("not base64!", "input [1] is not base64 text; send each image file's bytes (PNG, JPEG, …) base64-encoded"),
        (base64.b64encode(b"hello").decode(), "input [1] is not an image Pillow can read (UnidentifiedImageError)"),
    ],
)
def test_a_string_that_is_no_image_is_refused_in_one_line(item, expected):
    with pytest.raises(MlflowException) as error:
        quiet_tf.requested(np.array([png_base64(on_paper(drawn("7"))), item]))
    message = error.value.message
    assert message.startswith(expected) and "\n" not in message and "hello" not in message


def test_photo_imports_only_what_a_served_model_has():
    """A copy ships inside every logged model, where mnist_pipeline is not installed."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(photo.__file__).read_text())
    imported = {a.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    imported |= {
        node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported <= {"dataclasses", "numpy", "PIL", "scipy"}, imported
