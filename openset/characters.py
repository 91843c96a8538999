"""Characters that are not digits, drawn from the stroke fonts that PyPI's ``hershey-fonts`` ships.

Two uses, with disjoint fonts:

* **negatives** for training (outlier exposure, Hendrycks et al. 2019): letters and symbols of the
  :data:`TRAINING_FONTS`, drawn with a random pen width and slant into MNIST's layout (:func:`glyph_bank`);
  ``negatives.kinds`` has ``"characters"`` for them (``openset.negatives``), changed further by the people's
  augmentation of each batch;
* **the printed check** of the report (``training.printed``): letters and the known digits of the
  :data:`CHECK_FONTS`, drawn as dark print on white paper (:func:`page`) and read through the service's own
  preprocessing.

Never drawn: the digits (a 5-9 would be an unknown digit in training) and the glyphs whose shape *is* a known
digit (:data:`LOOKALIKES`: O and o are a 0, I, l and | a 1). The common system fonts (DejaVu, Liberation, Noto,
FreeFont) are never used: printed text in them is an independent check of the product.
"""

from __future__ import annotations

import functools
import string

import numpy as np
from PIL import Image, ImageDraw

# Fixed from the known classes before any figure: a glyph that is written as the digit itself.
LOOKALIKES: dict[int, str] = {0: "Oo", 1: "Il|"}
SYMBOLS = "#$%&@?+=*<>~"
# Hershey's Latin fonts, split once: the check's fonts are never trained on.
TRAINING_FONTS = ("futural", "rowmans", "rowmand", "rowmant", "timesr", "timesrb", "timesib", "scripts", "cursive",
                  "gothiceng")
CHECK_FONTS = ("futuram", "timesi", "scriptc")
SIDE = 112  # glyphs are drawn at 4x MNIST's side


def characters(known_classes: tuple[int, ...]) -> str:
    """The letters and symbols that may be negatives of a model of ``known_classes``: every one but the digits and
    the glyphs that look like a known digit."""
    excluded = set(string.digits) | {c for digit in known_classes for c in LOOKALIKES.get(digit, "")}
    return "".join(c for c in string.ascii_letters + SYMBOLS if c not in excluded)


@functools.cache
def _font(name: str):
    from HersheyFonts import HersheyFonts  # the train extra (hershey-fonts)

    return HersheyFonts(load_default_font=name)


def strokes(font: str, char: str) -> list[np.ndarray]:
    """The glyph's strokes as polylines ``[P, 2]`` (x right, y down, font units); empty if the font lacks it."""
    return [np.asarray(s, np.float64) for s in _font(font).strokes_for_text(char) if len(s) > 1]


def draw(lines: list[np.ndarray], pen: float, slant: float, side: int = SIDE, fill: float = 0.8) -> np.ndarray:
    """The strokes as ink (float ``[side, side]``, 1 = ink, white on black), slanted by ``slant`` (x += slant * -y),
    scaled so that the glyph's longer side is ``fill`` of the canvas, the pen ``pen`` of the canvas side wide."""
    points = np.concatenate(lines)
    centre_y = (points[:, 1].min() + points[:, 1].max()) / 2
    slanted = [np.stack([p[:, 0] - slant * (p[:, 1] - centre_y), p[:, 1]], 1) for p in lines]
    points = np.concatenate(slanted)
    low, high = points.min(0), points.max(0)
    scale = fill * side / max(float((high - low).max()), 1e-6)
    offset = side / 2 - scale * (low + high) / 2
    width = max(1, round(pen * side))
    canvas = Image.new("L", (side, side), 0)
    pencil = ImageDraw.Draw(canvas)
    for line in slanted:
        xy = [tuple(v) for v in line * scale + offset]
        pencil.line(xy, fill=255, width=width, joint="curve")
        for x, y in (xy[0], xy[-1]):  # round ends, as a pen's
            pencil.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=255)
    return np.asarray(canvas, np.float32) / 255


@functools.cache
def glyph_bank(known_classes: tuple[int, ...], variants: int = 4, seed: int = 0) -> np.ndarray:
    """Every allowed character of every training font, ``variants`` times with a random pen (3-12 % of the glyph's
    size) and slant (-0.35..0.35), laid out as MNIST's digits: float32 ``[N, 1, 28, 28]``, white on black."""
    import torch

    from openset.augment import to_mnist_layout

    rng = np.random.default_rng(seed)
    drawn = []
    for font in TRAINING_FONTS:
        for char in characters(known_classes):
            lines = strokes(font, char)
            for _ in range(variants if lines else 0):
                ink = draw(lines, pen=rng.uniform(0.03, 0.12), slant=rng.uniform(-0.35, 0.35))
                drawn.append(np.asarray(Image.fromarray(ink).resize((28, 28), Image.Resampling.BOX)))
    images = torch.from_numpy(np.clip(np.stack(drawn), 0, 1)[:, None])
    return to_mnist_layout(images / images.amax((2, 3), keepdim=True).clamp_min(1e-6)).numpy()


def page(font: str, char: str, pen: float = 0.07, paper: float = 0.96, ink: float = 0.08) -> bytes:
    """The character printed dark on white paper, as the PNG a user would send (the printed check)."""
    import io

    drawn = draw(strokes(font, char), pen, slant=0.0, side=160, fill=0.6)
    grey = paper + (ink - paper) * drawn
    buffer = io.BytesIO()
    Image.fromarray(np.rint(grey * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
