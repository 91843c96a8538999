"""Real images to the model's input: find the digit's ink in a photo, scan or drawing, then lay it out as MNIST did.

Finding the ink (:func:`darkness`, :func:`ink_of_digit`): grey levels; light ink on a dark ground is
inverted; the paper's own brightness is estimated everywhere (uneven light and shadows divide out); the
strokes are Otsu's threshold of the lightly smoothed darkness, without specks and without pieces apart
from the digit; stroke intensities are rescaled to full strength (grey paper, pencil, coloured ink).
Laying out (:func:`mnist_like`): cropped to the ink's box, scaled to fit the model's box (MNIST: 20x20)
keeping the aspect ratio, anti-aliased, and placed in the model's field (MNIST: 28x28) with its centre of mass at
the centre. The layout is the model's own (its manifest's ``input.layout``). Pillow and numpy only. Ready arrays of
the model's side (0-255 or 0-1) are taken as they are. Every rejection is an
:class:`~service.errors.ServiceError` with an HTTP status.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from openset.contract import MNIST_SIDE, layout
from openset.manifest import Layout
from service.codec import numbers, pixels
from service.errors import ServiceError

FORMATS = {"PNG", "JPEG", "BMP", "WEBP", "GIF"}
MEDIA_TYPES = {"image/png", "image/jpeg", "image/jpg", "image/bmp", "image/x-ms-bmp", "image/webp", "image/gif"}
MNIST = Layout(**layout(MNIST_SIDE))  # the default; a model's own is in its manifest
# Finding the strokes (see mnist_like), as shares of the picture's shorter side unless said otherwise:
WORKING_SIDE = 256  # larger pictures are reduced to this many pixels first (speed)
BACKGROUND_SIDE = 24  # the paper's brightness is estimated at this resolution ...
STROKE_WINDOW = 0.25  # ... with a closing this wide: wider than any stroke, narrower than the light's changes
SMOOTHING = 0.006  # Gaussian blur (sigma) before thresholding
SPECK, SPECK_DENSITY = 2, 0.2  # px, share: a pixel with fewer stroke pixels in its 5x5 square is a speck
COMPONENT_SIDE, GAP = 48, 3  # the digit's pieces are joined on a map this large, across gaps of GAP cells
NEAR_STROKES = 0.03  # ink is kept this close to a stroke
MIN_CONTRAST = 0.12  # a picture whose darkest spots are this close to the paper is blank
BOX_INK = 0.2  # the digit's box holds its ink from this level on (MNIST's 20x20 box holds the soft edges too)


def decode(data: bytes, max_pixels: int) -> Image.Image:
    """Decode PNG/JPEG/BMP/WebP/GIF (first frame) safely; the pixel budget is checked before decoding."""
    if not data:
        raise ServiceError("empty image", 400)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in FORMATS:
                raise ServiceError(f"unsupported image format {image.format}; send PNG, JPEG, BMP, WebP or GIF", 415)
            # Only the decoders above ever parse the bytes from here on.
            width, height = image.size
            if width * height > max_pixels:
                raise ServiceError(f"image of {width}x{height} pixels exceeds the limit of {max_pixels}", 400)
            image.seek(0)
            longest = max(width, height)
            if image.format == "JPEG" and longest > 2 * WORKING_SIDE:  # big photos decoded reduced, to >= WORKING_SIDE
                image.draft("L", (width * WORKING_SIDE // longest, height * WORKING_SIDE // longest))
            image.load()
            image = ImageOps.exif_transpose(image)  # phone photos: upright as the user saw them
    except ServiceError:
        raise
    except UnidentifiedImageError:
        raise ServiceError("not a decodable image (PNG, JPEG, BMP, WebP or GIF expected)", 400) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ServiceError("image refused as a decompression bomb", 400) from None
    except (OSError, ValueError, SyntaxError) as err:  # truncated or corrupt data
        raise ServiceError(f"corrupt image: {err}", 400) from None
    return image


def _grey(image: Image.Image) -> tuple[np.ndarray, Image.Image]:
    """Grey levels in [0, 1], and as an 8-bit picture (for Pillow's filters); transparent pixels become the
    background (white). Pictures over ``WORKING_SIDE`` are reduced to it first."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit or float grey: keep the full range
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if values.max() > 255 else (255.0 if values.max() > 1 else 1.0)
        grey = np.clip(values / peak, 0.0, 1.0).astype(np.float32)
        picture = _as_image(grey)
        if max(grey.shape) <= WORKING_SIDE:
            return grey, picture
    else:
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, rgba)
        picture = ImageOps.grayscale(image)
    if max(picture.size) > WORKING_SIDE:  # the strokes are found at a few hundred pixels at most
        picture.thumbnail((WORKING_SIDE, WORKING_SIDE), Image.Resampling.BOX)
    return _as_array(picture), picture


def _as_image(values: np.ndarray) -> Image.Image:
    """Values in [0, 1] (or a mask) as an 8-bit picture."""
    if values.dtype == bool:
        return Image.fromarray(values.view(np.uint8) * np.uint8(255))
    return Image.fromarray(np.clip(np.rint(values * 255), 0, 255).astype(np.uint8))


def _as_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image, np.float32) * np.float32(1 / 255)


def _mask(image: Image.Image, above: float = 0.0) -> np.ndarray:
    """The pixels of an 8-bit picture over ``above`` (in [0, 1])."""
    return np.asarray(image) > above * 255


def _odd(size: float) -> int:
    return max(3, int(size) // 2 * 2 + 1)


def darkness(grey: np.ndarray, picture: Image.Image | None = None) -> np.ndarray:
    """How much darker than the paper around it each pixel is, in [0, 1] (0 = paper, 1 = black).

    Light ink on a dark ground (a chalkboard, MNIST itself) is inverted first: the ground is the side of
    the grey range nearer the picture's border. The paper's brightness is estimated everywhere by a grey
    closing (the strokes removed) at low resolution, so uneven light and shadows cancel out:
    darkness = 1 - grey / paper, the ink's own reflectance whatever the light on it. ``picture``: ``grey`` as an
    8-bit picture, if the caller has it.
    """
    small = (picture or _as_image(grey)).copy()
    small.thumbnail((BACKGROUND_SIDE, BACKGROUND_SIDE), Image.Resampling.BOX)
    values = np.asarray(small)
    ordered = np.sort(values, axis=None)
    low, high = _percentile(ordered, 0.01), _percentile(ordered, 0.99)
    border = float(np.median(np.concatenate([values[0], values[-1], values[:, 0], values[:, -1]])))
    if border - low < high - border:  # the ground is dark: light ink
        grey, small = 1.0 - grey, ImageOps.invert(small)
    window = _odd(STROKE_WINDOW * min(small.size))
    paper = small.filter(ImageFilter.MaxFilter(window)).filter(ImageFilter.MinFilter(window))
    paper = paper.filter(ImageFilter.GaussianBlur(window / 4)).resize(grey.shape[::-1], Image.Resampling.BILINEAR)
    reflectance = grey / np.maximum(_as_array(paper), np.float32(1 / 255))
    return np.clip(np.float32(1) - reflectance, 0.0, 1.0, out=reflectance)


def _percentile(ordered: np.ndarray, share: float) -> float:
    """``np.percentile``'s linear interpolation on values already sorted."""
    position = share * (len(ordered) - 1)
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return float(ordered[below] + (float(ordered[above]) - float(ordered[below])) * (position - below))


def otsu(levels: np.ndarray) -> float:
    """Otsu's threshold: the level (in [0, 1]) that best splits 8-bit ``levels`` into two classes."""
    counts = np.bincount(levels.ravel(), minlength=256)
    grades = np.arange(256) / 255
    weight, mean = np.cumsum(counts), np.cumsum(counts * grades)
    below, above = weight[:-1], weight[-1] - weight[:-1]
    between = (mean[-1] * below - mean[:-1] * weight[-1]) ** 2 / np.maximum(below * above, 1)
    return float(grades[np.argmax(between)] + 0.5 / 255)  # between the two classes' nearest levels


def ink_of_digit(dark: np.ndarray) -> tuple[np.ndarray, tuple[slice, slice]] | None:
    """The digit's ink in [0, 1] (the ink's own level = 1, the paper and its noise = 0) and its box (rows, columns);
    None for a blank picture.

    Otsu's threshold of the slightly smoothed darkness (noise averages out) marks the strokes; specks (pixels
    with few stroke pixels around them) and pieces apart from the digit (:func:`digit_strokes`) are dropped.
    The darkness is then rescaled between half that threshold and the strokes' typical darkness, so that grey
    paper, pencil and coloured ink give full-strength strokes, and kept only near the digit's strokes. The box
    holds the smoothed ink from ``BOX_INK`` on, soft edges included as in MNIST, noise not.
    """
    side = min(dark.shape)
    smooth = np.asarray(_as_image(dark).filter(ImageFilter.GaussianBlur(max(0.5, side * SMOOTHING))))
    if smooth.max() < MIN_CONTRAST * 255:
        return None
    level = otsu(smooth)
    above = smooth > level * 255
    strokes = digit_strokes(above & _mask(_as_image(above).filter(ImageFilter.BoxBlur(SPECK)), SPECK_DENSITY))
    if not strokes.any():
        return None
    near = _mask(_as_image(strokes).filter(ImageFilter.BoxBlur(max(1.0, side * NEAR_STROKES))))
    full = float(np.median(dark[strokes]))
    floor = level / 2
    rescale = lambda v: np.clip((v - floor) / max(full - floor, 1e-3), 0.0, 1.0) * near  # noqa: E731
    rows, cols = np.nonzero(rescale(smooth * np.float32(1 / 255)) > BOX_INK)
    if not len(rows):
        return None
    return rescale(dark), (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))


def digit_strokes(strokes: np.ndarray) -> np.ndarray:
    """The digit's strokes: those joined, across gaps up to ``GAP``, to the densest ink; smudges and specks apart
    from them are dropped. The joined region is the connected region (:func:`connected`) of the densest ink on a
    low-resolution map of the strokes."""
    if not strokes.any():
        return strokes
    cells = _as_image(strokes)
    cells.thumbnail((COMPONENT_SIDE, COMPONENT_SIDE), Image.Resampling.BOX)
    occupied = _mask(cells)
    cells = _as_image(occupied)
    reach = _mask(cells.filter(ImageFilter.BoxBlur(GAP)))
    density = np.asarray(cells.filter(ImageFilter.BoxBlur(max(1, COMPONENT_SIDE // 8)))) * occupied
    joined = connected(reach, np.unravel_index(np.argmax(density), density.shape))
    return strokes & _mask(_as_image(joined).resize(strokes.shape[::-1], Image.Resampling.NEAREST), 0.5)


def connected(region: np.ndarray, seed: tuple[int, int]) -> np.ndarray:
    """The pixels of ``region`` joined to ``seed`` through their 4 neighbours (a flood fill), grown a whole run of
    a row or a column at a time: a run of the region touching the joined pixels joins whole."""
    runs = [_runs(region), _runs(region.T)]  # each pixel's run of its row, and of its column (0: outside)
    joined = np.zeros(region.shape, bool)
    joined[seed] = region[seed]
    count = int(joined.sum())
    while True:
        for turn, labels in enumerate(runs):
            view = joined if turn == 0 else joined.T
            hit = np.zeros(labels.max() + 1, bool)
            hit[labels[view]] = True
            hit[0] = False
            view[...] = hit[labels]
        grown = int(joined.sum())
        if grown == count:
            return joined
        count = grown


def _runs(region: np.ndarray) -> np.ndarray:
    """A label for each run of ``region`` along its rows (1, 2, ...; 0 outside the region)."""
    padded = np.zeros((region.shape[0], region.shape[1] + 1), bool)
    padded[:, :-1] = region
    flat = padded.ravel()
    starts = flat.copy()
    starts[1:] &= ~flat[:-1]
    return (np.cumsum(starts) * flat).reshape(padded.shape)[:, :-1]


def mnist_like(image: Image.Image, layout: Layout = MNIST) -> np.ndarray:
    """A decoded image as float32 ``[side, side]`` in [0, 1], white digit on black, MNIST-centred: the ink found
    by :func:`ink_of_digit` (photos, scans and drawings alike), cropped, scaled to fit a ``box`` x ``box`` square
    keeping the aspect ratio (MNIST: 20 of 28; the model's manifest says), and placed by centre of mass — the
    procedure MNIST itself used."""
    side = layout.side
    found = ink_of_digit(darkness(*_grey(image)))
    if found is None:  # blank: nothing to centre
        return np.zeros((side, side), np.float32)
    ink, crop = found
    ink = np.ascontiguousarray(ink[crop], np.float32)
    height, width = ink.shape
    scale = layout.box / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = np.asarray(Image.fromarray(ink, mode="F").resize(size, Image.Resampling.LANCZOS), np.float32)
    return centre_of_mass(np.clip(small, 0.0, 1.0), side)


def centre_of_mass(patch: np.ndarray, side: int = MNIST_SIDE) -> np.ndarray:
    """Place ``patch`` in a ``side`` x ``side`` field with its centre of mass at the centre (clipped at the edges)."""
    mass = patch.sum()
    height, width = patch.shape
    if mass <= 0:
        return np.zeros((side, side), np.float32)
    cy = float((patch.sum(axis=1) * np.arange(height)).sum() / mass)
    cx = float((patch.sum(axis=0) * np.arange(width)).sum() / mass)
    # MNIST's digits have their centre of mass at pixel (14, 14) (measured on the test set).
    top = int(np.clip(round(side / 2 - cy), 0, side - height))
    left = int(np.clip(round(side / 2 - cx), 0, side - width))
    field = np.zeros((side, side), np.float32)
    field[top : top + height, left : left + width] = patch
    return field


def from_image_bytes(data: bytes, max_pixels: int, layout: Layout = MNIST) -> np.ndarray:
    return mnist_like(decode(data, max_pixels), layout)


def from_array(values, side: int = MNIST_SIDE) -> np.ndarray:
    """A ready ``side`` x ``side`` image (nested lists or an array; 0-255 or 0-1) as float32 ``[side, side]``.

    Only real numbers are pixels: booleans, strings (even "0.5"), complex numbers, dates and objects
    (``None`` included) are refused, as are ragged lists, other shapes, NaN, infinities and values
    outside [0, 255]."""
    array = values if isinstance(values, np.ndarray) else numbers(values)
    if array is None or array.dtype.kind not in "iuf":
        raise ServiceError("image array must be numbers", 422)
    array = array.astype(np.float64, copy=False)
    if array.ndim > 2 and all(d == 1 for d in array.shape[:-2]):  # [1, side, side] or [1, 1, side, side]
        array = array.reshape(array.shape[-2:])
    if array.shape != (side, side):
        raise ServiceError(f"image array must be {side}x{side}, got shape {list(array.shape)}", 422)
    return pixels(array, "either")
