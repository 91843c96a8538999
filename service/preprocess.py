"""Real images to the model's input: the procedure MNIST itself used.

Grey levels, white ink on black (dark-on-light images are inverted), cropped to the ink's
bounding box, scaled to fit 20x20 keeping the aspect ratio (anti-aliased), and placed in a
28x28 field so that the centre of mass sits at the centre. Ready 28x28 arrays (0-255 or 0-1)
are accepted as they are. Every rejection is a :class:`InputError` with an HTTP status.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

FORMATS = {"PNG", "JPEG", "BMP", "WEBP", "GIF"}
MEDIA_TYPES = {"image/png", "image/jpeg", "image/jpg", "image/bmp", "image/x-ms-bmp", "image/webp", "image/gif"}
SIDE, BOX = 28, 20
INK = 0.1  # share of full contrast above which a pixel counts as ink for the bounding box


class InputError(ValueError):
    """Input the service refuses; ``status`` is the HTTP code to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def decode(data: bytes, max_pixels: int) -> Image.Image:
    """Decode PNG/JPEG/BMP/WebP/GIF (first frame) safely; the pixel budget is checked before decoding."""
    if not data:
        raise InputError("empty image", 400)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in FORMATS:
                raise InputError(f"unsupported image format {image.format}; send PNG, JPEG, BMP, WebP or GIF", 415)
            # Only the decoders above ever parse the bytes from here on.
            width, height = image.size
            if width * height > max_pixels:
                raise InputError(f"image of {width}x{height} pixels exceeds the limit of {max_pixels}", 400)
            image.seek(0)
            longest = max(width, height)
            if image.format == "JPEG" and longest > 1024:  # decode big photos reduced (still >= 512 px)
                image.draft("L", (width * 512 // longest, height * 512 // longest))
            image.load()
            image = ImageOps.exif_transpose(image)  # phone photos: upright as the user saw them
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError("not a decodable image (PNG, JPEG, BMP, WebP or GIF expected)", 400) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError("image refused as a decompression bomb", 400) from None
    except (OSError, ValueError, SyntaxError) as err:  # truncated or corrupt data
        raise InputError(f"corrupt image: {err}", 400) from None
    return image


def _grey(image: Image.Image) -> np.ndarray:
    """Grey levels in [0, 1]; transparent pixels become the background (white)."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit or float grey: keep the full range
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if values.max() > 255 else (255.0 if values.max() > 1 else 1.0)
        return np.clip(values / peak, 0.0, 1.0).astype(np.float32)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return np.asarray(ImageOps.grayscale(image), dtype=np.float32) / 255.0


def mnist_like(image: Image.Image) -> np.ndarray:
    """A decoded image as float32 ``[28, 28]`` in [0, 1], white digit on black, MNIST-centred."""
    grey = _grey(image)
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    background = float(np.median(border))
    if background > 0.5:  # dark ink on a light background
        grey, background = 1.0 - grey, 1.0 - background
    contrast = float(grey.max()) - background
    if contrast < 0.05:  # blank: nothing to centre
        return np.zeros((SIDE, SIDE), np.float32)
    ink = np.clip((grey - background) / contrast, 0.0, 1.0)
    rows, cols = np.nonzero(ink > INK)
    ink = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    height, width = ink.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = np.asarray(Image.fromarray(ink, mode="F").resize(size, Image.Resampling.LANCZOS), np.float32)
    return centre_of_mass(np.clip(small, 0.0, 1.0))


def centre_of_mass(patch: np.ndarray) -> np.ndarray:
    """Place ``patch`` in a 28x28 field with its centre of mass at the centre (clipped at the edges)."""
    mass = patch.sum()
    height, width = patch.shape
    if mass <= 0:
        return np.zeros((SIDE, SIDE), np.float32)
    cy = float((patch.sum(axis=1) * np.arange(height)).sum() / mass)
    cx = float((patch.sum(axis=0) * np.arange(width)).sum() / mass)
    # MNIST's digits have their centre of mass at pixel (14, 14) (measured on the test set).
    top = int(np.clip(round(SIDE / 2 - cy), 0, SIDE - height))
    left = int(np.clip(round(SIDE / 2 - cx), 0, SIDE - width))
    field = np.zeros((SIDE, SIDE), np.float32)
    field[top : top + height, left : left + width] = patch
    return field


def from_image_bytes(data: bytes, max_pixels: int) -> np.ndarray:
    return mnist_like(decode(data, max_pixels))


def from_array(values) -> np.ndarray:
    """A ready 28x28 image (nested lists or an array; 0-255 or 0-1) as float32 ``[28, 28]``.

    Only real numbers are pixels: booleans, strings (even "0.5"), complex numbers, dates and objects
    (``None`` included) are refused, as are ragged lists, other shapes, NaN, infinities and values
    outside [0, 255]."""
    try:
        array = np.asarray(values)
    except (TypeError, ValueError):  # ragged nesting, or nesting deeper than numpy allows
        raise InputError("image array must be numbers", 422) from None
    if array.dtype.kind not in "iuf":
        raise InputError("image array must be numbers", 422)
    array = array.astype(np.float64, copy=False)
    if array.ndim > 2 and all(d == 1 for d in array.shape[:-2]):  # [1, 28, 28] or [1, 1, 28, 28]
        array = array.reshape(array.shape[-2:])
    if array.shape != (SIDE, SIDE):
        raise InputError(f"image array must be 28x28, got shape {list(array.shape)}", 422)
    if not np.all(np.isfinite(array)):
        raise InputError("image array contains NaN or infinity", 422)
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 255:
        raise InputError("image values must lie in [0, 1] or [0, 255]", 422)
    return (array / 255.0 if high > 1.0 else array).astype(np.float32)
