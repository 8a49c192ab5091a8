"""A photo, scan or drawing of one digit → MNIST's form, and the checks that say an input is unsure.

Pure functions on numpy arrays (numpy, scipy.ndimage and Pillow only). A copy of this file ships
inside every logged model beside quiet_tf.py, its pyfunc loader, so `predict` and the served model
run the same code: it imports nothing from mnist_pipeline.

`prepare` takes a grayscale image of any size and polarity and:
1. shrinks it to at most WORK pixels a side (a digit needs no more to become 20×20);
2. decides polarity from which side of the paper's level the far-off pixels lie (ink is the minority);
3. removes the background with a grey opening wider than any stroke (exact on a lighting gradient,
   keeps a shadow's edge), dividing by the paper's level so ink contrast is the same across the page;
4. thresholds (Otsu, floored above the sensor noise; faint ink kept where it touches clear ink),
   removes thin straight lines across the page (ruled or squared paper, found by projecting the ink
   along each slope up to a few degrees) and bridges the strokes they crossed;
5. keeps the largest mark and the marks near it (a broken stroke), drops distant ones, and counts
   the separate marks of comparable size (another digit, a scribble);
6. fits the kept ink into 20×20 and centres it by mass in 28×28, as MNIST was made.

`features`, `measure` and `unsure` are the "not sure" check: thresholds measured on the validation
split at train time (the model's confidence, the ink statistics) and applied to each answer.
"""

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps
from scipy import ndimage

SIDE = 28
BOX = 20  # MNIST's digits were fitted into 20×20 and centred by mass in 28×28
WORK = 320  # the longest side the analysis works at
MIN_CONTRAST = 0.12  # ink darker (or lighter) than its paper by less than this share is no ink
MARK_SHARE = 0.25  # a separate mark at least this share of the digit's size counts as another mark
SPECK_SHARE = 0.03  # smaller than this share of the digit: noise, ignored
NEAR = 0.3  # a part within this share of the digit's size from it is a broken stroke of it
MAX_PIXELS = 25_000_000  # an image larger is refused from its header: a digit needs a few hundred pixels a side
THRESHOLDS_FILE = "unsure.json"  # the unsure check's thresholds, saved beside the model at train time
INK = 128  # a pixel of the 28×28 image at least this bright is ink, for the ink statistics
LINE_COVER = 0.6  # ink along a straight line over this share of the page: ruled or squared paper's line
LINE_TILT = np.deg2rad(4)  # the paper's lines are looked for up to this far off level (a phone held askew)
LINE_WIDTH = 0.03  # a paper's line is at most this share of the page thick; a thicker band is a stroke
LINE_ENDS = 0.15  # and over this share of the page at each end: a paper's line runs from edge to edge
STROKE_OVER_LINE = 1.5  # a pixel on a line with ink this many times the line's own is a stroke's


@dataclass(frozen=True)
class Prepared:
    image: np.ndarray  # 28×28 uint8, a light digit on black
    marks: int  # separate marks of comparable size: 1 for a lone digit, 0 when no ink was found
    found: bool  # whether any ink stood out from the paper


def from_pillow(image: Image.Image) -> np.ndarray:
    """Luminance 0–255 (float) of an image in any Pillow mode, turned as its EXIF says; transparent
    parts become white paper."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):  # one channel of 16 or 32 bits, or float
        values = np.asarray(image, np.float64)
        high = values.max(initial=0)
        if image.mode.startswith("I;16") or 255 < high <= 65535:  # 16-bit (older Pillow opens such PNGs as I)
            values = values / 257
        elif image.mode == "F" and 0 < high <= 1:  # a float image scaled to [0, 1]
            values = values * 255
        elif high > 65535:
            values = values * (255 / high)
        return np.clip(values, 0, 255).astype(np.float32)
    if image.mode == "La":  # premultiplied alpha: Pillow converts it to LA only
        image = image.convert("LA")
    if image.has_transparency_data:  # an alpha band, or a transparent colour (P, L or RGB with tRNS)
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    if image.mode == "LAB":  # Pillow converts LAB to RGB only
        image = image.convert("RGB")
    return np.asarray(image.convert("L"), dtype=np.float32)


def prepare(gray: np.ndarray) -> Prepared:
    """A grayscale image (0–255, any size, dark ink on light paper or the reverse) in MNIST's form."""
    gray = shrink(np.asarray(gray, np.float32))
    ink = flatten(gray)
    if ink.max(initial=0) < MIN_CONTRAST:
        return Prepared(np.zeros((SIDE, SIDE), np.uint8), 0, False)
    high, low = threshold(ink)
    mask, ink = without_lines(ink >= low, ink, low / 2)
    # Hysteresis: faint ink (a light stroke's end, a thin bar) counts where it touches clear ink.
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    strong = np.unique(labels[mask & (ink >= high)])
    mask &= np.isin(labels, strong[strong > 0])
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    if count == 0:
        return Prepared(np.zeros((SIDE, SIDE), np.uint8), 0, False)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    kept, marks = the_digit(labels, sizes)
    # The kept marks' soft edges too (anti-aliasing, blur: a few hundredths of the digit's size),
    # nothing else on the page.
    strokes = np.isin(labels, kept)
    rows, cols = np.nonzero(strokes)
    edge = max(2, round(0.04 * max(np.ptp(rows) + 1, np.ptp(cols) + 1)))
    region = ndimage.binary_dilation(strokes, np.ones((3, 3)), iterations=edge)
    full = max(float(np.percentile(ink[strokes], 99)), 1e-6)  # stroke cores at full ink, as MNIST's are
    digit = np.where(region, ink, 0) / full
    return Prepared(fit(np.clip(digit, 0, 1) * 255), marks, True)


def shrink(gray: np.ndarray) -> np.ndarray:
    scale = WORK / max(gray.shape)
    if scale >= 1:
        return gray
    size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
    return np.asarray(Image.fromarray(gray, "F").resize(size, Image.Resampling.BOX), np.float32)


def flatten(gray: np.ndarray) -> np.ndarray:
    """Ink strength 0–1 per pixel: how far it is from its paper's level, towards the ink's side,
    as a share of the room there is (a share of the paper's light for dark ink on paper)."""
    if min(gray.shape) >= 3 * SIDE:  # sensor noise: single pixels; a small image's strokes are a pixel wide
        gray = ndimage.median_filter(gray, size=3)
    work = 255 - gray if dark_ink(gray) else gray  # from here on, ink is light on dark
    # An opening removes light structures narrower than its window, leaving the paper, gradients and
    # a shadow's edge as they are. The window must be wider than the strokes, and no wider than it
    # needs: at 0.3 of the short side a round shadow's edge was left as a grey patch beside a digit
    # (the benchmark's shadows: 0.946 read right; 0.987 at 0.22), at 0.15 thick strokes were opened
    # away. So a first look at 0.3 measures the strokes, and the window is 3 strokes wide, kept
    # within 0.22–0.3 of the side (a digit that fills a drawing's canvas has strokes a tenth of it).
    side = min(gray.shape)
    paper = ndimage.grey_opening(work, size=(max(3, round(0.3 * side)),) * 2)
    window = max(3, min(round(0.3 * side), max(round(0.22 * side), round(3 * stroke_width(work - paper)))))
    if window < round(0.3 * side):
        paper = ndimage.grey_opening(work, size=(window, window))
    return np.clip((work - paper) / np.maximum(255 - paper, 1), 0, 1)


def stroke_width(ink: np.ndarray) -> float:
    """The strokes' typical width in pixels: twice the 90th percentile of the distance from an ink
    pixel to the nearest paper, over the pixels above half the strongest ink (0 if there are none)."""
    mask = ink > 0.5 * ink.max(initial=0)
    if not mask.any():
        return 0.0
    return 2 * float(np.percentile(ndimage.distance_transform_edt(mask)[mask], 90))


def dark_ink(gray: np.ndarray) -> bool:
    """Whether the ink is darker than the paper: the paper is the majority, so its level is a wide
    median; the ink is the pixels far from it, on one side."""
    # About 32 pixels a side: a median over half of it costs a millisecond (at 48, 30 ms: it was most of
    # prepare's time), and a stroke of a digit that fills the image still spans a sample or more.
    coarse = gray[:: max(1, gray.shape[0] // 32), :: max(1, gray.shape[1] // 32)]
    window = max(3, min(coarse.shape) // 2)
    paper = ndimage.median_filter(coarse, size=window)
    residual = coarse - paper
    noise = 3 * 1.4826 * np.median(np.abs(residual)) + 1
    return float(np.maximum(-residual - noise, 0).sum()) > float(np.maximum(residual - noise, 0).sum())


def threshold(ink: np.ndarray) -> tuple[float, float]:
    """Two thresholds on the flattened image: clear ink (Otsu's, kept above the paper's noise and a
    share of the darkest ink) and faint ink (above the noise only)."""
    counts, edges = np.histogram(ink, bins=256, range=(0, 1))
    centres = (edges[:-1] + edges[1:]) / 2
    below = np.cumsum(counts)
    mass = np.cumsum(counts * centres)
    above = below[-1] - below
    with np.errstate(divide="ignore", invalid="ignore"):
        between = below * above * (mass / below - (mass[-1] - mass) / above) ** 2
    otsu = float(centres[np.nanargmax(np.nan_to_num(between, nan=-1))])
    median = float(np.median(ink))
    noise = median + 6 * 1.4826 * float(np.median(np.abs(ink - median)))
    faint = max(noise, 0.15 * float(ink.max()), MIN_CONTRAST / 2)
    high = max(otsu, faint, 0.3 * float(ink.max()), MIN_CONTRAST)
    return high, max(faint, 0.5 * high)


def without_lines(mask: np.ndarray, ink: np.ndarray, faint: float) -> tuple[np.ndarray, np.ndarray]:
    """The mask and ink without the ruled or squared paper's lines (found among the pixels of ink at
    least `faint`: a faint line breaks up at the mask's threshold, and its pieces would join the
    digit). Where a stroke crossed a line, the gap is bridged."""
    if min(mask.shape) < 64:  # a digit this small on ruled paper is unreadable anyway; MNIST's 28×28 are left alone
        return mask, ink
    present = ink >= faint
    # Both directions are looked for on the same pixels: a squared paper's lines cross each other,
    # and the columns' lines would lose their crossings if the rows' were taken out first.
    for axis, lines in enumerate([ruled(present), ruled(present.T)]):  # along the rows, along the columns
        if not lines.any():
            continue
        m, i = (mask, ink) if axis == 0 else (mask.T, ink.T)
        # Printed lines are fainter than a pen's ink: where a line's pixel is clearly darker than the
        # line's own level, a stroke crosses it or runs along it (a 7's bar on a ruled line), and stays.
        lines = lines & (i <= STROKE_OVER_LINE * float(np.median(i[lines])))
        span = max(2, round(LINE_WIDTH * m.shape[0])) + 4
        bridged = ndimage.binary_closing(m & ~lines, np.ones((span, 1))) & lines
        m, i = (m & ~lines) | bridged, np.where(lines & ~bridged, 0, i)
        mask, ink = (m, i) if axis == 0 else (m.T, i.T)
    return mask, ink


def ruled(present: np.ndarray) -> np.ndarray:
    """The pixels of `present` on straight lines along its rows: lines across at least LINE_COVER of
    the width and of each of its ends, up to LINE_TILT off level, no thicker than a ruled line. Each
    slope is tried (one pixel of drift over the width apart) by shearing the columns and counting
    along the sheared rows: the paper's lines are parallel, so the slope whose lines are best covered
    is theirs. A digit's own stroke (a 7's bar, a 3's arc in a tight crop) stops short of the image's
    ends, and a canvas-filling digit's bar is thick."""
    height, width = present.shape
    rows, cols = np.nonzero(present)
    end = max(1, round(LINE_ENDS * width))
    parts = [
        (np.arange(width), cols >= 0),
        (np.arange(end), cols < end),
        (np.arange(width - end, width), cols >= width - end),
    ]
    best, found, shift = 0.0, np.zeros(0, bool), np.zeros(width, int)
    for slope in np.tan(np.arange(-LINE_TILT, LINE_TILT + 1e-9, 1 / width)):
        drift = np.rint(np.arange(width) * slope).astype(int)
        drift -= drift.max()  # a pixel's sheared row, row - drift[col], is never negative
        size = height - drift.min()
        covered = []
        for columns, pixels in parts:  # the whole width, then each end
            counts = np.bincount(rows[pixels] - drift[cols[pixels]], minlength=size)
            # The part's pixels on each sheared row: column c's rows start at -drift[c].
            starts, stops = -drift[columns], height - drift[columns]
            inside = np.cumsum(np.bincount(starts, minlength=size + 1) - np.bincount(stops, minlength=size + 1))[:size]
            covered.append(np.where(inside >= len(columns) / 2, counts / np.maximum(inside, 1), 0))
        lines = np.all([c >= LINE_COVER for c in covered], axis=0)
        if covered[0][lines].sum() > best:
            best, found, shift = float(covered[0][lines].sum()), lines, drift
    if not found.any():
        return np.zeros_like(present)
    runs, _ = ndimage.label(found)
    thin = 1 + np.flatnonzero(np.bincount(runs)[1:] <= max(2, round(LINE_WIDTH * height)) + 1)
    found = ndimage.binary_dilation(np.isin(runs, thin))  # and the line's blurred edges
    return found[np.arange(height)[:, None] - shift] & present


def the_digit(labels: np.ndarray, sizes: np.ndarray) -> tuple[list[int], int]:
    """The labels of the digit (the largest mark and the parts near it) and the count of separate marks."""
    boxes = ndimage.find_objects(labels)
    order = [int(i) for i in np.argsort(-sizes)]
    main = order[0]
    kept = [main]
    top, left, bottom, right = box(boxes[main])
    grew = True
    while grew:  # a part near the digit may bring another in reach
        grew = False
        for i in order[1:]:
            if i in kept or sizes[i] < SPECK_SHARE * sizes[main]:
                continue
            t, lft, b, r = box(boxes[i])
            gap = max(t - bottom, top - b, lft - right, left - r, 0)
            if gap <= NEAR * max(bottom - top, right - left):
                kept.append(i)
                top, left, bottom, right = min(top, t), min(left, lft), max(bottom, b), max(right, r)
                grew = True
    others = sum(1 for i in order if i not in kept and sizes[i] >= MARK_SHARE * sizes[main])
    return [i + 1 for i in kept], 1 + others


def box(slices: tuple[slice, slice]) -> tuple[int, int, int, int]:
    return slices[0].start, slices[1].start, slices[0].stop, slices[1].stop


def fit(digit: np.ndarray) -> np.ndarray:
    """Ink 0–255 on black → 28×28 uint8: the ink's box fitted into 20×20 and centred by mass."""
    rows, cols = np.nonzero(digit > 0.25 * digit.max())  # the box of the strokes, not of their faintest halo
    digit = digit[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].astype(np.float32)
    scale = BOX / max(digit.shape)
    size = (max(1, round(digit.shape[1] * scale)), max(1, round(digit.shape[0] * scale)))
    small = np.clip(np.asarray(Image.fromarray(digit, "F").resize(size, Image.Resampling.LANCZOS)), 0, 255)
    # Centre of mass to the middle, as MNIST was made; clipped so the digit stays whole.
    mass_rows, mass_cols = np.indices(small.shape)
    total = max(float(small.sum()), 1e-6)
    top = round(SIDE / 2 - (mass_rows * small).sum() / total)
    left = round(SIDE / 2 - (mass_cols * small).sum() / total)
    top, left = int(np.clip(top, 0, SIDE - small.shape[0])), int(np.clip(left, 0, SIDE - small.shape[1]))
    canvas = np.zeros((SIDE, SIDE), np.float32)
    canvas[top : top + small.shape[0], left : left + small.shape[1]] = small
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


# --- "not sure" ----------------------------------------------------------------------------------
STATISTICS = ("ink", "height", "width")  # measured on the 28×28 image the model reads
UNSURE_SHARE = 0.02  # the share of validation digits, the least confident, that the confidence check flags
RANGE = (0.1, 99.9)  # percentiles of the validation digits' ink statistics: outside them is unusual


def count_marks(images: np.ndarray) -> np.ndarray:
    """The separate marks of each image already in MNIST's form (a .npy batch, a request's pixels,
    the validation digits), counted as `prepare` counts them on a photo: its ink is clear already."""
    counts = []
    for image in np.asarray(images):
        labels, count = ndimage.label(image >= INK // 2, structure=np.ones((3, 3)))
        sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        counts.append(the_digit(labels, sizes)[1] if count else 0)
    return np.array(counts, int)


def features(images: np.ndarray, marks: np.ndarray) -> dict[str, np.ndarray]:
    """Per 28×28 image: its ink share, the rows and columns its ink spans, and its separate marks."""
    ink: np.ndarray = np.asarray(images) >= INK
    rows = np.any(ink, axis=2)
    cols = np.any(ink, axis=1)

    def span(lines: np.ndarray) -> np.ndarray:
        first, last = lines.argmax(axis=1), lines.shape[1] - lines[:, ::-1].argmax(axis=1)
        return np.where(lines.any(axis=1), last - first, 0)

    return {"ink": ink.mean(axis=(1, 2)), "height": span(rows), "width": span(cols), "marks": np.asarray(marks)}


def measure(images: np.ndarray, probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """The unsure check's thresholds, from the validation digits (MNIST's form) and the model's answers."""
    marks = count_marks(images)
    stats = features(images, marks)
    confident = probabilities.max(axis=1)
    right = probabilities.argmax(axis=1) == labels
    threshold = float(np.quantile(confident, UNSURE_SHARE))
    above = confident >= threshold
    thresholds = {
        "confidence": threshold,
        "ranges": {name: [float(np.percentile(stats[name], p)) for p in RANGE] for name in STATISTICS},
        "max_marks": max(1, int(np.percentile(marks, RANGE[1]))),  # a digit or two of MNIST's is broken wide
    }
    flagged = unsure(stats, probabilities, thresholds)
    return thresholds | {
        "measured_on": {
            "validation_images": len(labels),
            "confidence_flags": f"the least confident {UNSURE_SHARE:.0%} of them",
            "ink_ranges": f"percentiles {RANGE[0]} to {RANGE[1]}",
            "error_rate_above_confidence": float(1 - right[above].mean()),
            "error_rate_below_confidence": float(1 - right[~above].mean()) if (~above).any() else None,
            "error_rate_all": float(1 - right.mean()),
            "flagged_share": float(flagged.mean()),
            "error_rate_not_flagged": float(1 - right[~flagged].mean()) if (~flagged).any() else None,
        }
    }


def unsure(stats: dict[str, np.ndarray], probabilities: np.ndarray, thresholds: dict | None) -> np.ndarray:
    """Which answers to flag: no ink, several marks, ink statistics outside the validation digits'
    ranges, or confidence below the measured threshold. Without thresholds (a model trained before
    they were measured): no ink and several marks only."""
    marks = np.asarray(stats["marks"])
    flagged = (marks == 0) | (marks > (thresholds or {}).get("max_marks", 1))
    if thresholds:
        for name, (low, high) in thresholds["ranges"].items():
            flagged |= (stats[name] < low) | (stats[name] > high)
        flagged |= probabilities.max(axis=1) < thresholds["confidence"]
    return flagged
