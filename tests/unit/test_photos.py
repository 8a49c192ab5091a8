"""bench/photos.py, the renderer of the robustness benchmark: each condition gives a photo of the
digit (dark ink on lighter paper, neither pure white nor pure black), the same photo for the same
seed, and the condition is really in it, measured on the image as a test of a photo would."""

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from bench.photos import CONDITIONS, SIDE, render

SEEDS = range(6)


def digit_seven() -> np.ndarray:
    """A hand-drawn 7 as MNIST holds its digits: 28×28 uint8, light ink on black, in the middle 20×20."""
    image = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(image).line([(7, 6), (21, 6), (13, 22)], fill=255, width=3, joint="curve")
    return np.asarray(image.filter(ImageFilter.GaussianBlur(0.6)))


SEVEN = digit_seven()


def photo(condition: str, seed: int) -> np.ndarray:
    return render(SEVEN, condition, seed, index=seed)


def patch_median(image: np.ndarray, row: int, col: int, size: int = 12) -> float:
    return float(np.median(image[row : row + size, col : col + size]))


def ink_mask(image: np.ndarray) -> np.ndarray:
    """The pixels clearly darker than the paper around them: a quarter below the page's local
    level (its grey closing over 25 pixels, wider than any stroke), once smoothed against noise."""
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(image.astype(np.float32), 1.0)
    return smooth < 0.75 * ndimage.grey_closing(smooth, size=(25, 25))


@pytest.mark.parametrize("condition", list(CONDITIONS))
def test_each_condition_is_a_photo_of_dark_ink_on_lighter_paper(condition):
    for seed in SEEDS:
        image = photo(condition, seed)
        assert image.shape == (SIDE, SIDE) and image.dtype == np.uint8
        ink = ink_mask(image)
        assert 80 < ink.sum() < 0.25 * image.size, f"seed {seed}: {ink.sum()} ink pixels"
        paper, dark = np.median(image[~ink]), np.median(image[ink])
        assert paper - dark > 40, f"seed {seed}: paper {paper}, ink {dark}"
        assert dark > 20 and paper < 245, f"seed {seed}: ink {dark} (never pure black), paper {paper} (never white)"


@pytest.mark.parametrize("condition", list(CONDITIONS))
def test_the_same_seed_gives_the_same_photo(condition):
    assert np.array_equal(render(SEVEN, condition, 7, 3), render(SEVEN, condition, 7, 3))
    assert not np.array_equal(render(SEVEN, condition, 7, 3), render(SEVEN, condition, 7, 4))
    assert not np.array_equal(render(SEVEN, condition, 7, 3), render(SEVEN, condition, 8, 3))


def corners(image: np.ndarray) -> list[float]:
    end = SIDE - 12
    return [patch_median(image, r, c) for r, c in ((0, 0), (0, end), (end, 0), (end, end))]


def test_lighting_gradient_spans_the_page_from_dim_to_bright():
    """Paper grey 130 → 225 across the page: the corners' paper differs by about 90, never in clean."""
    for seed in SEEDS:
        levels = corners(photo("lighting_gradient", seed))
        assert 75 < max(levels) - min(levels) < 100 and min(levels) < 150 and max(levels) > 205, levels
        assert max(corners(photo("clean", seed))) - min(corners(photo("clean", seed))) < 6


def block_levels(image: np.ndarray, size: int = 32) -> np.ndarray:
    """The paper's level in each size² block: its 90th percentile, above the ink in it."""
    blocks = image.reshape(SIDE // size, size, SIDE // size, size).swapaxes(1, 2).reshape(-1, size * size)
    return np.percentile(blocks, 90, axis=1)


def test_a_shadow_darkens_part_of_the_page():
    for seed in SEEDS:
        levels = block_levels(photo("shadow", seed))
        assert np.ptp(levels) > 40, f"seed {seed}: paper from {levels.min()} to {levels.max()}"
        assert np.ptp(block_levels(photo("clean", seed))) < 8


def test_noise_is_strong_and_clean_is_not():
    """The top-left corner is paper only (the digit is near the middle): its spread is the noise."""
    for seed in SEEDS:
        assert 15 < photo("noise", seed)[:20, :20].std() < 30
        assert photo("clean", seed)[:20, :20].std() < 5


def dips(profile: np.ndarray) -> int:
    """Runs of a 1-D profile darker than its median by more than 10 grey levels."""
    dark = profile < np.median(profile) - 10
    return int(np.count_nonzero(dark[1:] & ~dark[:-1]) + dark[0])


def test_ruled_lines_cross_the_page():
    """Down the left edge, clear of the digit, ruled or squared paper shows a dark line every 16–30
    pixels; clean paper none."""
    for seed in SEEDS:
        assert dips(photo("ruled_lines", seed)[:, :8].mean(axis=1)) >= 4
        assert dips(photo("clean", seed)[:, :8].mean(axis=1)) == 0


def test_thick_strokes_hold_more_ink_and_thin_ones_less():
    for seed in SEEDS:
        clean, thick, thin = (ink_mask(photo(c, seed)).sum() for c in ("clean", "thick_strokes", "thin_strokes"))
        assert thick > 1.25 * clean and thin < 0.85 * clean, (thin, clean, thick)


def test_off_centre_puts_a_small_digit_away_from_the_middle():
    for seed in SEEDS:
        rows, cols = np.nonzero(ink_mask(photo("off_centre", seed)))
        assert max(np.ptp(rows), np.ptp(cols)) < 0.4 * SIDE
        assert np.hypot(rows.mean() - SIDE / 2, cols.mean() - SIDE / 2) > 0.15 * SIDE
        rows, cols = np.nonzero(ink_mask(photo("clean", seed)))
        assert np.hypot(rows.mean() - SIDE / 2, cols.mean() - SIDE / 2) < 0.1 * SIDE


def test_blur_softens_the_stroke_edges():
    """Blurred, the edge between ink and paper spreads over more pixels of middling grey."""
    for seed in SEEDS:
        middling = []
        for condition in ("clean", "blur"):
            image = photo(condition, seed).astype(np.float32)
            ink = ink_mask(image)
            paper, dark = np.median(image[~ink]), np.percentile(image[ink], 10)
            low, high = dark + 0.25 * (paper - dark), paper - 0.25 * (paper - dark)
            middling.append(np.count_nonzero((image > low) & (image < high)))
        assert middling[1] > 1.5 * middling[0], middling


def drawn(shape: str) -> np.ndarray:
    """A bar (a 1) or a square's outline, as MNIST holds its digits."""
    image = Image.new("L", (28, 28), 0)
    if shape == "bar":
        ImageDraw.Draw(image).line([(14, 5), (14, 22)], fill=255, width=3)
    else:
        ImageDraw.Draw(image).rectangle([6, 6, 21, 21], outline=255, width=2)
    return np.asarray(image)


def tilt(image: np.ndarray) -> float:
    """Degrees the ink's long axis leans from the vertical."""
    rows, cols = np.nonzero(ink_mask(image))
    cov = np.cov(np.stack([cols, rows]))
    return abs(np.degrees(0.5 * np.arctan2(2 * cov[0, 1], cov[1, 1] - cov[0, 0])))


def test_rotation_turns_the_digit():
    bar = drawn("bar")
    for seed in SEEDS:
        assert 6 < tilt(render(bar, "rotation", seed)) < 17
        assert tilt(render(bar, "clean", seed)) < 2


def keystone(image: np.ndarray) -> float:
    """How much shorter a square's shortest side looks than its opposite: 1 for a square seen flat."""
    ink = ink_mask(image)
    rows, cols = np.nonzero(ink)
    top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
    width = [np.ptp(np.nonzero(ink[r])[0]) for r in (top + 2, bottom - 2)]
    height = [np.ptp(np.nonzero(ink[:, c])[0]) for c in (left + 2, right - 2)]
    return min(min(width) / max(width), min(height) / max(height))


def test_perspective_makes_a_square_a_trapezoid():
    square = drawn("square")
    for seed in SEEDS:
        assert keystone(render(square, "perspective", seed)) < 0.95
        assert keystone(render(square, "clean", seed)) > 0.97


def test_margin_marks_put_a_small_mark_near_an_edge():
    edge = np.ones((SIDE, SIDE), bool)
    edge[16:-16, 16:-16] = False
    for seed in SEEDS:
        assert 4 < (ink_mask(photo("margin_marks", seed)) & edge).sum() < 120
        assert not (ink_mask(photo("clean", seed)) & edge).any()


def test_paper_tint_is_another_paper_than_clean():
    """Coloured paper through RGB → L: over the seeds, paper greys beyond clean's 205–235 appear."""
    levels = [np.median(photo("paper_tint", seed)) for seed in range(20)]
    assert min(levels) < 195 or max(levels) > 236, levels


def test_everyday_brings_a_gradient_a_turn_blur_and_noise_together():
    """The one condition of several things at once: the paper's grey spans the page as the lighting
    gradient's does, the digit is turned (up to 6°: a bar leans, over the seeds), and the paper is
    noisier than clean's (its grain: the corner less its own smoothed copy)."""
    from scipy import ndimage

    def grain(image: np.ndarray) -> float:
        corner = image[:20, :20].astype(np.float32)
        return float((corner - ndimage.gaussian_filter(corner, 3)).std())

    bar = drawn("bar")
    leans = [tilt(render(bar, "everyday", seed)) for seed in range(12)]
    assert max(leans) > 2.5 and max(leans) < 7, leans
    for seed in SEEDS:
        image = photo("everyday", seed)
        levels = corners(image)
        assert max(levels) - min(levels) > 50 and min(levels) < 175, levels
        assert grain(image) > 1.5 * grain(photo("clean", seed))
