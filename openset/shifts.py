"""The changes of the shift benchmark: digits drawn as people's images arrive, then changed in one realistic way.

A digit in MNIST's layout (28x28, white ink on black, in [0, 1]) is drawn 4x larger (112 px) as dark ink on
light paper, at a random place on a 160 px page, changed by one :class:`Change` at severity 1, 2 or 3, and
encoded as the bytes a user would send (PNG; JPEG where the change is compression). The service's own
preprocessing then turns the bytes into the model's input (``training.robustness``).

The changes come in two groups. ``tuning``: design choices may look at known digits under these.
``held_out``: reported as unseen changes, never used for any choice. MNIST-C (Mu & Gilmer, 2019) is the
published reference for such a suite; these are written for photos and scans of handwriting.
numpy and Pillow only.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

SCALE, PAGE = 4, 160
DIGIT = 28 * SCALE
PAPER, PEN = 0.96, 0.08  # grey levels of white paper and a black pen


@dataclass(frozen=True)
class Change:
    name: str
    group: str  # "tuning" or "held_out"
    description: str  # what severities 1, 2, 3 mean
    render: Callable[[np.ndarray, int, np.random.Generator], bytes]  # (ink at 112 px, severity, rng) -> bytes


# Ink (float [112, 112], 1 = ink) and page (float grey or RGB in [0, 1], paper light) helpers.

def _image(values: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(values * 255), 0, 255).astype(np.uint8))


def _array(image: Image.Image) -> np.ndarray:
    return np.asarray(image, np.float32) / 255


def upscale(digit: np.ndarray) -> np.ndarray:
    """A 28x28 digit as an ink map 4x larger (bicubic)."""
    return _array(_image(digit).resize((DIGIT, DIGIT), Image.Resampling.BICUBIC))


def morph(ink: np.ndarray, radius: int) -> np.ndarray:
    """Strokes thicker (``radius`` > 0 px on each side) or thinner (< 0)."""
    size = 2 * abs(radius) + 1
    return _array(_image(ink).filter(ImageFilter.MaxFilter(size) if radius > 0 else ImageFilter.MinFilter(size)))


def affine(ink: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The ink map under a 2x2 linear map about its centre (bilinear), on a canvas large enough to hold it."""
    side = int(DIGIT * 1.5)
    centre = np.array([side / 2, side / 2])
    inverse = np.linalg.inv(matrix)
    offset = centre - inverse @ centre
    image = Image.new("L", (side, side))
    image.paste(_image(ink), ((side - DIGIT) // 2, (side - DIGIT) // 2))
    data = (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])
    return _array(image.transform(image.size, Image.Transform.AFFINE, data, Image.Resampling.BILINEAR))


def rotation(degrees: float) -> np.ndarray:
    angle = np.deg2rad(degrees)
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def elastic(ink: np.ndarray, amplitude: float, rng: np.random.Generator, grid: int = 4) -> np.ndarray:
    """A smooth random warp (another writer's hand): displacements of up to about ``amplitude`` MNIST pixels,
    drawn on a coarse grid and interpolated (bicubic) over the image, then sampled bilinearly."""
    side = ink.shape[0]
    fields = [np.asarray(Image.fromarray(rng.uniform(-1, 1, (grid, grid)).astype(np.float32))
                         .resize((side, side), Image.Resampling.BICUBIC)) * amplitude * SCALE for _ in range(2)]
    rows, cols = np.mgrid[0:side, 0:side].astype(np.float32)
    y, x = np.clip(rows + fields[0], 0, side - 1), np.clip(cols + fields[1], 0, side - 1)
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    y1, x1 = np.minimum(y0 + 1, side - 1), np.minimum(x0 + 1, side - 1)
    wy, wx = y - y0, x - x0
    return ((1 - wy) * ((1 - wx) * ink[y0, x0] + wx * ink[y0, x1]) + wy * ((1 - wx) * ink[y1, x0] + wx * ink[y1, x1]))


def on_paper(ink: np.ndarray, rng: np.random.Generator, paper=PAPER, pen=PEN, page: int = PAGE) -> np.ndarray:
    """The ink map drawn at a random place on a page: grey ``[page, page]``, or RGB if paper or pen is a colour."""
    coverage = np.zeros((page, page), np.float32)
    height, width = ink.shape
    if height > page or width > page:  # a warped canvas larger than the page: keep its centre
        top, left = (height - page) // 2, (width - page) // 2
        ink, (height, width) = ink[top : top + page, left : left + page], (page, page)
    top, left = rng.integers(0, page - height + 1), rng.integers(0, page - width + 1)
    coverage[top : top + height, left : left + width] = ink
    paper, pen = np.asarray(paper, np.float32), np.asarray(pen, np.float32)
    if paper.ndim or pen.ndim:
        coverage = coverage[..., None]
    return paper - (paper - pen) * coverage


def blur(page: np.ndarray, radius: float) -> np.ndarray:
    return _array(_image(page).filter(ImageFilter.GaussianBlur(radius)))


def motion(page: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A straight camera shake: the mean of the page shifted along a random direction over ``length`` px."""
    angle = rng.uniform(0, np.pi)
    image, steps = _image(page), np.linspace(-length / 2, length / 2, length)
    shifted = [image.transform(image.size, Image.Transform.AFFINE, (1, 0, t * np.cos(angle), 0, 1, t * np.sin(angle)),
                               Image.Resampling.BILINEAR, fillcolor=int(PAPER * 255)) for t in steps]
    return np.mean([_array(s) for s in shifted], axis=0)


def noise(page: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(page + rng.normal(0, sigma, page.shape), 0, 1)


def shade(page: np.ndarray, darkest: float, rng: np.random.Generator) -> np.ndarray:
    """Uneven light: brightness falls linearly from 1 to ``darkest`` across a random direction."""
    angle = rng.uniform(0, 2 * np.pi)
    rows, cols = np.mgrid[0 : page.shape[0], 0 : page.shape[1]] / (page.shape[0] - 1) - 0.5
    ramp = (np.cos(angle) * cols + np.sin(angle) * rows) / np.sqrt(0.5) + 0.5  # 0..1 across the page
    light = 1 - (1 - darkest) * np.clip(ramp, 0, 1)
    return page * (light[..., None] if page.ndim == 3 else light)


def shrink(page: np.ndarray, side: int) -> np.ndarray:
    """A low-resolution picture (``side`` px) enlarged again to the page size."""
    size = page.shape[1], page.shape[0]
    return _array(_image(page).resize((side, side), Image.Resampling.BOX).resize(size, Image.Resampling.BILINEAR))


def encode(page: np.ndarray, fmt: str = "PNG", quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    _image(page).save(buffer, fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def _signed(rng: np.random.Generator, value: float) -> float:
    return value if rng.random() < 0.5 else -value


def _squeeze(ink: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    matrix = np.diag([factor, 1.0]) if rng.random() < 0.5 else np.diag([1.0, factor])
    return affine(ink, matrix)


def _pencil(ink: np.ndarray, s: int, rng: np.random.Generator) -> bytes:
    grain = np.asarray(Image.fromarray(rng.uniform(0.3, 1.0, (DIGIT // 2, DIGIT // 2)).astype(np.float32))
                       .resize((DIGIT, DIGIT), Image.Resampling.NEAREST))
    darkness = (0.65, 0.5, 0.38)[s - 1]  # share of the paper's brightness the graphite takes away
    return encode(blur(on_paper(morph(ink, -1) * grain, rng, pen=PAPER * (1 - darkness)), 1.0))


def _photo(ink: np.ndarray, s: int, rng: np.random.Generator) -> bytes:
    page = on_paper(ink, rng, paper=(0.85, 0.75, 0.65)[s - 1], pen=0.15)
    page = blur(shade(page, (0.8, 0.65, 0.5)[s - 1], rng), (1.0, 1.8, 2.5)[s - 1])
    page = noise(page, (0.03, 0.05, 0.07)[s - 1], rng)
    return encode(page, "JPEG", (60, 40, 25)[s - 1])


INK_COLOURS = ((0.1, 0.15, 0.55), (0.8, 0.12, 0.1), (0.3, 0.65, 0.3))  # blue ballpoint, red, green felt-tip

CHANGES: dict[str, Change] = {c.name: c for c in [
    Change("thin_pen", "tuning", "strokes 2, 4, 6 px thinner at 112 px (MNIST strokes are about 10)",
           lambda ink, s, rng: encode(on_paper(morph(ink, -s), rng))),
    Change("thick_pen", "tuning", "strokes 4, 8, 12 px thicker at 112 px",
           lambda ink, s, rng: encode(on_paper(morph(ink, 2 * s), rng))),
    Change("defocus", "tuning", "Gaussian blur of radius 2, 3.5, 5 px",
           lambda ink, s, rng: encode(blur(on_paper(ink, rng), (2.0, 3.5, 5.0)[s - 1]))),
    Change("rotate", "tuning", "turned by 10, 20, 30 degrees either way",
           lambda ink, s, rng: encode(on_paper(affine(ink, rotation(_signed(rng, 10 * s))), rng))),
    Change("shear", "tuning", "slanted: horizontal shear 0.15, 0.3, 0.45 either way",
           lambda ink, s, rng: encode(on_paper(affine(ink, np.array([[1, _signed(rng, 0.15 * s)], [0, 1]])), rng))),
    Change("squeeze", "tuning", "one axis scaled by 0.8, 0.65, 0.5 (narrow or flat writing)",
           lambda ink, s, rng: encode(on_paper(_squeeze(ink, (0.8, 0.65, 0.5)[s - 1], rng), rng))),
    Change("grey_paper", "tuning", "paper grey 0.75, 0.6, 0.45 (ink 0.08): contrast down to a third",
           lambda ink, s, rng: encode(on_paper(ink, rng, paper=(0.75, 0.6, 0.45)[s - 1]))),
    Change("sensor_noise", "tuning", "Gaussian noise of sigma 0.08, 0.15, 0.25 on a slightly grey page",
           lambda ink, s, rng: encode(noise(on_paper(ink, rng, paper=0.85), (0.08, 0.15, 0.25)[s - 1], rng))),
    Change("low_resolution", "tuning", "the 160 px page taken at 32, 22, 16 px, then enlarged",
           lambda ink, s, rng: encode(shrink(on_paper(ink, rng), (32, 22, 16)[s - 1]))),
    Change("other_writer", "tuning", "smooth random warp of about 1, 1.75, 2.5 MNIST px (elastic)",
           lambda ink, s, rng: encode(on_paper(elastic(ink, (1.0, 1.75, 2.5)[s - 1], rng), rng))),
    Change("motion_blur", "held_out", "camera shake over 8, 14, 20 px in a random direction",
           lambda ink, s, rng: encode(motion(on_paper(ink, rng), (8, 14, 20)[s - 1], rng))),
    Change("shadow", "held_out", "light falling across the page to 0.7, 0.5, 0.35 of full",
           lambda ink, s, rng: encode(shade(on_paper(ink, rng), (0.7, 0.5, 0.35)[s - 1], rng))),
    Change("jpeg", "held_out", "JPEG at quality 20, 10, 5",
           lambda ink, s, rng: encode(on_paper(ink, rng), "JPEG", (20, 10, 5)[s - 1])),
    Change("pencil", "held_out", "grainy graphite taking 65, 50, 38 % of the light, thin and soft",
           _pencil),
    Change("coloured_ink", "held_out", "blue ballpoint, red pen, green felt-tip (colour PNG)",
           lambda ink, s, rng: encode(on_paper(ink, rng, paper=(PAPER,) * 3, pen=INK_COLOURS[s - 1]))),
    Change("phone_photo", "held_out", "grey paper, uneven light, blur, noise and JPEG together, growing",
           _photo),
]}
SEVERITIES = (1, 2, 3)


def render_clean(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """The digit as a person's clean picture: black pen on white paper, PNG."""
    return encode(on_paper(upscale(digit), rng))


def render(digit: np.ndarray, change: str, severity: int, rng: np.random.Generator) -> bytes:
    """The digit drawn on paper, changed by ``change`` at ``severity`` (1-3), as image file bytes."""
    return CHANGES[change].render(upscale(digit), severity, rng)
