"""MNIST digits photographed, as the system tests need them: the digit drawn large in dark ink on
paper under a named condition (a lighting gradient, a shadow, ruled lines, thick strokes, marks in
the margin), and the inputs that are not one digit (a strip of noise, a speck, several digits)."""

import numpy as np
from PIL import Image
from scipy import ndimage

CONDITIONS: dict[str, dict] = {
    "gradient": {},  # grey 130 → 220 across the page, as by a window, with sensor noise
    "shadow": {"shadow": True},
    "ruled lines": {"ruled": True, "lo": 190, "hi": 230},
    "thick strokes": {"thick": True},
    "margin marks": {"margin": True},
}


def photo(digit: np.ndarray, lo=130.0, hi=220.0, noise=6.0, seed=0, **extra) -> np.ndarray:
    """A 28×28 MNIST digit (light on black) as a grayscale photo 360×480 of dark ink on paper."""
    rng = np.random.default_rng(seed)
    ink = np.asarray(Image.fromarray(digit).resize((280, 280), Image.Resampling.BICUBIC), np.float32) / 255
    if extra.get("thick"):
        ink = ndimage.grey_dilation(ink, size=(13, 13))
    page = np.zeros((360, 480), np.float32)
    page[40:320, 100:380] = np.clip(ink, 0, 1)
    if extra.get("ruled"):
        for row in range(20, 360, 32):
            page[row : row + 2] = np.maximum(page[row : row + 2], 0.55)
    if extra.get("margin"):  # a dot and a short dash far from the digit
        page[330:340, 10:20] = 1
        page[12:18, 430:465] = 1
    paper = np.tile(np.linspace(lo, hi, 480, dtype=np.float32), (360, 1))
    if extra.get("shadow"):  # a hand's shadow over the left third, its edge across the digit
        paper[:, :160] *= 0.55
    image = paper * (1 - page) + 30 * page + rng.normal(0, noise, page.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def several(digits: list[np.ndarray]) -> np.ndarray:
    """Digits side by side with gaps, on evenly lit paper: several marks, not one digit."""
    row = np.concatenate([np.pad(d, ((0, 0), (14, 14))) for d in digits], axis=1)
    big = np.asarray(Image.fromarray(row).resize((row.shape[1] * 8, 28 * 8), Image.Resampling.BICUBIC), np.float32)
    return np.clip(220 - 190 * big / 255, 0, 255).astype(np.uint8)


def noise_strip(seed=0) -> np.ndarray:
    """A 1×50 strip of noise: what a broken upload or a cropped margin sends."""
    return np.random.default_rng(seed).integers(0, 256, (1, 50)).astype(np.uint8)


def speck() -> np.ndarray:
    """A page with a small dot on it: near blank."""
    page = np.full((200, 200), 225, np.uint8)
    page[98:102, 120:124] = 60
    return page
