"""The printed check: characters printed in fonts that training never saw, as users send them.

Letters (not the look-alikes of a known digit: O, o, I, l) and the known digits of the held-out stroke fonts
(:data:`openset.characters.CHECK_FONTS`), printed dark on white at three pen widths, go as PNG pictures through
the service's own preprocessing and the model at its threshold: letters should come back ``other``, the known
digits with their label. It is measured once a model is made (``openset train`` / ``export``, into the report);
no choice looks at it.
"""

from __future__ import annotations

import string
from collections import Counter

import numpy as np

from openset.calibration import UNKNOWN
from openset.characters import CHECK_FONTS, characters, page, strokes
from openset.manifest import Layout
from service import preprocess
from training.robustness import Predict, answered

PENS = (0.05, 0.08, 0.11)  # of the page's side


def _pictures(glyphs: list[tuple[str, str]], layout: Layout) -> np.ndarray:
    images = [preprocess.from_image_bytes(page(font, char, pen), max_pixels=10**7, layout=layout)
              for font, char in glyphs for pen in PENS]
    return np.stack(images)[:, None]


def printed_check(predict: Predict, threshold: float, known_classes: tuple[int, ...], class_names: list[str],
                  layout: Layout) -> dict:
    """Letters refused and known digits answered right, over :data:`CHECK_FONTS` and :data:`PENS`; the letters let
    through, by the label they got."""
    allowed = set(characters(known_classes))
    letters = [(font, c) for font in CHECK_FONTS for c in string.ascii_letters if c in allowed and strokes(font, c)]
    digits = [(font, str(d)) for font in CHECK_FONTS for d in known_classes if strokes(font, str(d))]
    letter_answers = answered(predict, threshold, _pictures(letters, layout))
    digit_answers = answered(predict, threshold, _pictures(digits, layout))
    truth = np.repeat([known_classes.index(int(d)) for _, d in digits], len(PENS))
    sent = np.repeat([c for _, c in letters], len(PENS))
    passed = Counter(f"{c}→{class_names[a]}" for c, a in zip(sent, letter_answers, strict=True) if a != UNKNOWN)
    return {"fonts": list(CHECK_FONTS), "pens": list(PENS), "letters": len(letter_answers),
            "letters_refused": float(np.mean(letter_answers == UNKNOWN)), "digits": len(digit_answers),
            "digits_right": float(np.mean(digit_answers == truth)), "letters_passed": dict(passed.most_common())}
