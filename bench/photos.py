"""MNIST digits rendered as phone photos of a digit written on paper, under named conditions.

Each condition is a pure function `(digit, rng) -> image`: an MNIST digit (28×28 uint8, light ink
on black) in, a grayscale photo out (SIDE × SIDE uint8, dark ink on light paper). The digit is the
pen stroke: upscaled smoothly, then laid on paper as ink that reflects a share of the light the
paper does (so a shadow darkens ink and paper alike, as in a photo). `clean` is a good photo:
white-ish but never pure white paper, pen or pencil ink (never pure black), a little camera blur
and noise. Every other condition but the last is `clean` with one thing changed, so a drop in
accuracy is that thing's; `everyday` brings several together, as a real page does. The same digit,
condition and seed give the same photo, byte for byte.

    from bench.photos import CONDITIONS
    photo = CONDITIONS["lighting_gradient"](digit, np.random.default_rng(0))
"""

from collections.abc import Callable

import numpy as np
from PIL import Image
from scipy import ndimage

SIDE = 128  # the photo's side in pixels
SCALE = 3.0  # page pixels per MNIST pixel: the 20-pixel digit is about 60 pixels tall, half the page
PAPER = (205.0, 235.0)  # the grey of white paper in an evenly lit photo: a camera never reaches 255
INK = (0.2, 0.45)  # ink's share of the light paper reflects: ballpoint near 0.2, pencil near 0.45
CAMERA_NOISE = 3.0  # sensor noise of a good photo, grey levels (standard deviation)
CAMERA_BLUR = 0.6  # a phone's slight softness, in page pixels (Gaussian sigma)

Rng = np.random.Generator


# --- the pieces of a photo ------------------------------------------------------------------
def stroke(digit: np.ndarray, scale: float = SCALE) -> np.ndarray:
    """The digit as ink coverage 0–1 at page resolution: smoothly upscaled, its edges sharpened a
    little, since a pen's stroke has a firmer edge than MNIST's anti-aliased one."""
    big = ndimage.zoom(digit.astype(np.float32) / 255, scale, order=3)
    return np.clip((big - 0.15) / 0.55, 0, 1)


def disk(radius: int) -> np.ndarray:
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    return x * x + y * y <= radius * radius + radius  # a little rounder than the strict circle


def place(ink: np.ndarray, centre: tuple[float, float], side: int = SIDE) -> np.ndarray:
    """`ink` on an empty page of `side`², its centre of mass at `centre` (row, col); what falls off
    the page is cut."""
    page = np.zeros((side, side), np.float32)
    rows, cols = ndimage.center_of_mass(ink)
    top, left = round(centre[0] - rows), round(centre[1] - cols)
    r0, c0 = max(0, top), max(0, left)
    r1, c1 = min(side, top + ink.shape[0]), min(side, left + ink.shape[1])
    if r1 > r0 and c1 > c0:
        page[r0:r1, c0:c1] = ink[r0 - top : r1 - top, c0 - left : c1 - left]
    return page


def near_middle(rng: Rng) -> tuple[float, float]:
    """Where a person holding a phone over a digit puts it: near the middle, a few pixels off."""
    return SIDE / 2 + rng.uniform(-6, 6), SIDE / 2 + rng.uniform(-6, 6)


def ramp(rng: Rng) -> np.ndarray:
    """0 at one corner of the page rising to 1 at the opposite one, along a random direction."""
    angle = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    along = x * np.cos(angle) + y * np.sin(angle)
    return (along - along.min()) / (along.max() - along.min())


def warp(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """`image` seen through the homography `matrix` (output pixel (x, y, 1) → source pixel)."""
    y, x = np.mgrid[0:SIDE, 0:SIDE].astype(np.float64)
    sx, sy, sw = np.tensordot(matrix, np.stack([x, y, np.ones_like(x)]), axes=1)
    return ndimage.map_coordinates(image, [sy / sw, sx / sw], order=1, cval=0.0).astype(np.float32)


def homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 3×3 matrix taking the four points `src` to `dst` (each 4 × (x, y))."""
    rows = []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y, -u])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y, -v])
    return np.linalg.svd(np.array(rows))[2][-1].reshape(3, 3)


def motion_kernel(length: int, angle: float) -> np.ndarray:
    kernel = np.zeros((length, length), np.float32)
    middle = (length - 1) / 2
    for t in np.linspace(-middle, middle, 4 * length):
        kernel[round(middle + t * np.sin(angle)), round(middle + t * np.cos(angle))] = 1
    return kernel / kernel.sum()


def photo(
    digit: np.ndarray,
    rng: Rng,
    *,
    ink: np.ndarray | None = None,
    light: np.ndarray | None = None,
    lines: np.ndarray | None = None,
    paper_rgb: tuple[np.ndarray, np.ndarray] | None = None,
    blur: Callable[[np.ndarray], np.ndarray] | None = None,
    noise: float = CAMERA_NOISE,
) -> np.ndarray:
    """The photo: ink coverage `ink` (default: the digit near the middle) on paper lit as `light`
    (grey per pixel; default even, white-ish), with printed `lines` (coverage 0–1), through a
    camera that blurs (`blur`, default slight) and adds sensor noise (`noise`, grey levels).
    `paper_rgb`: the paper's and the ink's colour, rendered to grey as a camera's RGB → L."""
    if ink is None:
        ink = place(stroke(digit), near_middle(rng))
    level = rng.uniform(*PAPER)
    if light is None:
        light = np.full((SIDE, SIDE), level, np.float32)
    darkness = rng.uniform(*INK)
    reflect = 1 - ink * (1 - darkness)  # the share of the light the page sends back, per pixel
    if lines is not None:
        reflect = reflect * (1 - 0.3 * lines)  # printed lines: grey-blue, far fainter than the ink
    if paper_rgb is None:
        gray = light * reflect
    else:
        paper, pen = paper_rgb  # reflectances 0–1 per channel, under light of 255 at `light / level`
        cover = ink[..., None]
        rgb = 255 * (light / level)[..., None] * (paper * (1 - cover) + pen * cover)
        if lines is not None:
            rgb = rgb * (1 - 0.3 * lines[..., None])
        gray = np.asarray(Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB").convert("L"), np.float32)
    gray = blur(gray) if blur else ndimage.gaussian_filter(gray, CAMERA_BLUR)
    gray = gray + rng.normal(0, noise, gray.shape)
    return np.clip(np.rint(gray), 0, 255).astype(np.uint8)


# --- the conditions -------------------------------------------------------------------------
def clean(digit: np.ndarray, rng: Rng) -> np.ndarray:
    return photo(digit, rng)


def lighting_gradient(digit: np.ndarray, rng: Rng) -> np.ndarray:
    """Light from a window: the paper's grey goes from 130 to 225 across the page at a random angle."""
    return photo(digit, rng, light=130 + 95 * ramp(rng))


def shadow(digit: np.ndarray, rng: Rng) -> np.ndarray:
    """The phone's or a hand's shadow: a soft-edged band or blob that takes 35–55 % of the light."""
    level = rng.uniform(*PAPER)
    if rng.random() < 0.5:  # a band: the page beyond a soft edge at a random angle and place
        edge = ramp(rng) - rng.uniform(0.35, 0.65)
        cover = 1 / (1 + np.exp(-edge / 0.04))
    else:  # a blob off the middle
        y, x = np.mgrid[0:SIDE, 0:SIDE]
        cy, cx = rng.uniform(0.2, 0.8, 2) * SIDE
        cover = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * (SIDE * rng.uniform(0.18, 0.28)) ** 2))
    return photo(digit, rng, light=(level * (1 - rng.uniform(0.35, 0.55) * cover)).astype(np.float32))


TINTS = {  # paper colour as reflectance per RGB channel
    "off-white": (0.94, 0.91, 0.84),
    "yellowish": (0.98, 0.93, 0.68),
    "blue-ish": (0.82, 0.88, 0.97),
    "recycled grey": (0.80, 0.78, 0.72),
}
PENS = {"black pen": (0.16, 0.16, 0.18), "blue pen": (0.12, 0.16, 0.45), "pencil": (0.38, 0.38, 0.40)}


def paper_tint(digit: np.ndarray, rng: Rng) -> np.ndarray:
    """Coloured paper and ink (a blue pen on yellowish paper, …) photographed in colour, as a
    camera's grey (ITU-R 601 luma, Pillow's RGB → L)."""
    paper = np.array(list(TINTS.values())[rng.integers(len(TINTS))], np.float32)
    pen = np.array(list(PENS.values())[rng.integers(len(PENS))], np.float32)
    level = rng.uniform(*PAPER)
    light = np.full((SIDE, SIDE), level, np.float32)
    return photo(digit, rng, light=light, paper_rgb=(paper, pen))


def noise(digit: np.ndarray, rng: Rng) -> np.ndarray:
    """A dim room's sensor noise: grey levels with a standard deviation of 18–24."""
    return photo(digit, rng, noise=rng.uniform(18, 24))


def blur(digit: np.ndarray, rng: Rng) -> np.ndarray:
    """Out of focus (Gaussian, sigma 2.5–3.5 page pixels) or a shaking hand (a 9–13 pixel streak)."""
    if rng.random() < 0.5:
        sigma = rng.uniform(2.5, 3.5)
        return photo(digit, rng, blur=lambda image: ndimage.gaussian_filter(image, sigma))
    kernel = motion_kernel(int(rng.integers(9, 14)), rng.uniform(0, np.pi))
    return photo(digit, rng, blur=lambda image: ndimage.convolve(image, kernel, mode="nearest"))


def ruled_lines(digit: np.ndarray, rng: Rng) -> np.ndarray:
    """Ruled paper (lines 22–30 pixels apart) or squared paper (a 16–20 pixel grid), crossing the
    digit; the lines 1–2 pixels wide, a little off the horizontal as a hand holds a phone."""
    y, x = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    tilt = np.deg2rad(rng.uniform(-3, 3))
    across = y * np.cos(tilt) - x * np.sin(tilt)
    down = x * np.cos(tilt) + y * np.sin(tilt)
    width = rng.uniform(1.0, 2.0)

    def grid(coord: np.ndarray, spacing: float) -> np.ndarray:
        distance = np.abs((coord - rng.uniform(0, spacing) + spacing / 2) % spacing - spacing / 2)
        return np.clip(width / 2 + 0.5 - distance, 0, 1)

    if rng.random() < 0.5:
        lines = grid(across, rng.uniform(22, 30))
    else:
        spacing = rng.uniform(16, 20)
        lines = np.maximum(grid(across, spacing), grid(down, spacing))
    return photo(digit, rng, lines=lines)


def thick_strokes(digit: np.ndarray, rng: Rng) -> np.ndarray:
    """A felt pen: the stroke widened by 2–3 page pixels on each side."""
    ink = ndimage.grey_dilation(stroke(digit), footprint=disk(int(rng.integers(2, 4))))
    return photo(digit, rng, ink=place(ink, near_middle(rng)))


def thin_strokes(digit: np.ndarray, rng: Rng) -> np.ndarray:
    """A fine pen: the stroke narrowed by 2 page pixels on each side (no thinner than 1 pixel,
    as a fine pen still draws a line)."""
    full = stroke(digit)
    thin = ndimage.grey_erosion(full, footprint=disk(2))
    skeleton = full * (full >= ndimage.maximum_filter(full, size=3))  # the ridge of the stroke: kept
    return photo(digit, rng, ink=place(np.maximum(thin, skeleton), near_middle(rng)))


def off_centre(digit: np.ndarray, rng: Rng) -> np.ndarray:
    """The digit small (a fifth to a third of the page) and away from the middle, towards a corner
    or an edge."""
    ink = stroke(digit, rng.uniform(1.3, 1.8))
    angle = rng.uniform(0, 2 * np.pi)
    reach = SIDE / 2 - ink.shape[0] / 2 - 2
    distance = rng.uniform(0.6, 1.0) * reach
    centre = (SIDE / 2 + distance * np.sin(angle), SIDE / 2 + distance * np.cos(angle))
    return photo(digit, rng, ink=place(ink, centre))


def rotation(digit: np.ndarray, rng: Rng) -> np.ndarray:
    """The page turned 8–15° either way."""
    angle = rng.uniform(8, 15) * rng.choice([-1, 1])
    ink = np.clip(ndimage.rotate(place(stroke(digit), near_middle(rng)), angle, reshape=False, order=1), 0, 1)
    return photo(digit, rng, ink=ink)


def perspective(digit: np.ndarray, rng: Rng) -> np.ndarray:
    """The phone not held flat: a keystone, one side of the page 20–30 % shorter than the opposite."""
    ink = place(stroke(digit), near_middle(rng))
    corners = np.array([[0, 0], [SIDE, 0], [SIDE, SIDE], [0, SIDE]], np.float64)  # (x, y) clockwise from top left
    squeeze = rng.uniform(0.2, 0.3) * SIDE / 2  # at each end of the far side
    side = int(rng.integers(4))  # which side is further from the camera: top, right, bottom, left
    seen = corners.copy()
    ends = [(0, 1), (1, 2), (2, 3), (3, 0)][side]
    axis = 0 if side in (0, 2) else 1  # the far side shrinks along its own direction
    for end, toward in zip(ends, ends[::-1], strict=True):
        seen[end, axis] += squeeze * np.sign(corners[toward, axis] - corners[end, axis])
    return photo(digit, rng, ink=warp(ink, homography(seen, corners)))


def margin_marks(digit: np.ndarray, rng: Rng) -> np.ndarray:
    """Another small mark near an edge of the page: a tick, a dash or a dot of the same pen."""
    from PIL import ImageDraw

    canvas = Image.new("F", (SIDE, SIDE), 0.0)
    draw = ImageDraw.Draw(canvas)
    edge = int(rng.integers(4))
    along, inward = rng.uniform(12, SIDE - 12), rng.uniform(5, 12)
    cx, cy = [(along, inward), (SIDE - inward, along), (along, SIDE - inward), (inward, along)][edge]
    kind = int(rng.integers(3))
    if kind == 0:  # a tick
        draw.line([(cx - 5, cy - 1), (cx - 1, cy + 4), (cx + 7, cy - 6)], fill=1.0, width=3)
    elif kind == 1:  # a dash
        length = rng.uniform(8, 16)
        draw.line([(cx - length / 2, cy), (cx + length / 2, cy + rng.uniform(-2, 2))], fill=1.0, width=3)
    else:  # a dot
        draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=1.0)
    mark = ndimage.gaussian_filter(np.asarray(canvas, np.float32), 0.6)
    ink = place(stroke(digit), near_middle(rng))
    return photo(digit, rng, ink=np.maximum(ink, np.clip(mark, 0, 1)))


def everyday(digit: np.ndarray, rng: Rng) -> np.ndarray:
    """Several things at once, as a phone photo taken at a desk is: off-white paper lit from a window
    (130 → 225 across the page), the page turned up to 6° either way, a little out of focus (sigma
    1–1.5 page pixels) and a dim room's noise (6–10 grey levels). The one condition that is not
    `clean` with one thing changed: it stands for photos of real pages, where they come together."""
    angle = rng.uniform(-6, 6)
    ink = np.clip(ndimage.rotate(place(stroke(digit), near_middle(rng)), angle, reshape=False, order=1), 0, 1)
    pen = np.array(list(PENS.values())[rng.integers(len(PENS))], np.float32)
    sigma = rng.uniform(1.0, 1.5)
    return photo(
        digit,
        rng,
        ink=ink,
        light=(130 + 95 * ramp(rng)).astype(np.float32),
        paper_rgb=(np.array(TINTS["off-white"], np.float32), pen),
        blur=lambda image: ndimage.gaussian_filter(image, sigma),
        noise=rng.uniform(6, 10),
    )


# The order is part of each photo's seed (render): a new condition goes last.
CONDITIONS: dict[str, Callable[[np.ndarray, Rng], np.ndarray]] = {
    f.__name__: f
    for f in (
        clean,
        lighting_gradient,
        shadow,
        paper_tint,
        noise,
        blur,
        ruled_lines,
        thick_strokes,
        thin_strokes,
        off_centre,
        rotation,
        perspective,
        margin_marks,
        everyday,
    )
}


def render(digit: np.ndarray, condition: str, seed: int, index: int = 0) -> np.ndarray:
    """The photo of `digit` under `condition`, drawn from the seed, the condition and `index` (the
    digit's place in the sample): the same photo for the same three, whatever else is rendered."""
    number = list(CONDITIONS).index(condition)
    return CONDITIONS[condition](digit, np.random.default_rng([seed, number, index]))


def contact_sheet(photos: dict[str, np.ndarray], label_height: int = 16) -> Image.Image:
    """The photos side by side in one row, each with its condition's name above it."""
    from PIL import ImageDraw

    gap = 6
    width = max(p.shape[1] for p in photos.values())
    height = max(p.shape[0] for p in photos.values())
    sheet = Image.new("L", (len(photos) * (width + gap) + gap, height + label_height + 2 * gap), 255)
    draw = ImageDraw.Draw(sheet)
    for i, (name, image) in enumerate(photos.items()):
        left = gap + i * (width + gap)
        draw.text((left + 2, gap // 2), name.replace("_", " "), fill=0)
        sheet.paste(Image.fromarray(image), (left, gap + label_height))
    return sheet
