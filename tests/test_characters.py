"""Characters that are not digits (openset.characters): never a digit or a known digit's look-alike, training and
check fonts apart, glyphs drawn in MNIST's layout, printed pages the service reads; and the printed check."""

import io
import string

import numpy as np
import pytest
import torch
from PIL import Image

from openset import characters
from openset.augment import to_mnist_layout
from openset.config import AugmentConfig, NegativesConfig
from openset.manifest import Layout
from openset.negatives import NegativeSampler
from training import printed

KNOWN = (0, 1, 2, 3, 4)


def test_no_digit_and_no_look_alike_of_a_known_digit_is_drawn():
    allowed = characters.characters(KNOWN)
    assert not set(allowed) & set(string.digits)
    assert not set(allowed) & set("OoIl|")
    assert {"S", "s", "Z", "q", "g", "#"} <= set(allowed)  # shapes near 5, 2 and 9 are negatives, on purpose
    # A model that does not know 0 has no reason to refuse an O.
    assert "O" in characters.characters((1, 2)) and "I" not in characters.characters((1, 2))


def test_training_and_check_fonts_are_apart_and_none_is_a_system_font():
    assert not set(characters.TRAINING_FONTS) & set(characters.CHECK_FONTS)
    fonts = " ".join(characters.TRAINING_FONTS + characters.CHECK_FONTS).lower()
    assert not any(system in fonts for system in ("dejavu", "liberation", "noto", "freefont"))


def test_the_glyph_bank_is_mnist_layout_white_on_black_and_seeded():
    bank = characters.glyph_bank(KNOWN, variants=1, seed=3)
    assert bank.shape == (len(characters.TRAINING_FONTS) * len(characters.characters(KNOWN)), 1, 28, 28)
    assert bank.dtype == np.float32 and bank.min() >= 0.0 and bank.max() <= 1.0
    assert np.all(bank[:, :, 0, :] < 0.05) and np.all(bank[:, :, :, 0] < 0.05)  # an empty margin, as MNIST's
    # Already in MNIST's layout: laying it out again moves nothing much.
    again = to_mnist_layout(torch.from_numpy(bank)).numpy()
    assert np.abs(again - bank).mean() < 0.02
    np.testing.assert_array_equal(characters.glyph_bank(KNOWN, variants=1, seed=3), bank)
    assert not np.array_equal(characters.glyph_bank(KNOWN, variants=1, seed=4), bank)


def test_a_wider_pen_draws_more_ink():
    lines = characters.strokes("futural", "A")
    thin, thick = (characters.draw(lines, pen, slant=0.0).sum() for pen in (0.03, 0.1))
    assert thick > 2 * thin > 0


def test_a_printed_page_is_dark_print_on_white_paper():
    grey = np.asarray(Image.open(io.BytesIO(characters.page("timesi", "k"))), np.float32) / 255
    assert np.median(grey) > 0.9 and grey.min() < 0.2


def test_the_characters_kind_draws_from_the_bank_changed_by_the_augmentation():
    bank = torch.from_numpy(characters.glyph_bank(KNOWN, variants=1))
    cfg = NegativesConfig(kinds=("characters",))
    images, labels = torch.rand(32, 1, 28, 28), torch.arange(32) % 5
    as_drawn = NegativeSampler(cfg, glyphs=bank).sample(images, labels, torch.Generator().manual_seed(0))
    assert all(any(torch.equal(n, g) for g in bank) for n in as_drawn)
    changed = NegativeSampler(cfg, glyphs=bank, augment_cfg=AugmentConfig()).sample(
        images, labels, torch.Generator().manual_seed(0))
    assert changed.shape == as_drawn.shape and not torch.equal(changed, as_drawn)
    with pytest.raises(ValueError, match="glyph bank"):
        NegativeSampler(cfg)


def test_the_printed_check_counts_letters_refused_and_digits_right():
    """A stand-in model that refuses everything refuses every letter and gets no digit right; one that answers every
    picture with its class's label from a look-up gets every digit right."""
    layout = Layout(side=28, box=20)
    refuse_all = lambda images: {"probs": np.full((len(images), 5), 0.2, np.float32),  # noqa: E731
                                 "score": np.full(len(images), -10.0, np.float32)}
    result = printed.printed_check(refuse_all, 0.0, KNOWN, ["0", "1", "2", "3", "4"], layout)
    assert result["letters_refused"] == 1.0 and result["digits_right"] == 0.0 and result["letters_passed"] == {}
    assert result["letters"] == len(printed.PENS) * sum(
        1 for f in characters.CHECK_FONTS for c in string.ascii_letters if c in characters.characters(KNOWN))
    accept_all_as_3 = lambda images: {"probs": np.eye(5, dtype=np.float32)[np.full(len(images), 3)],  # noqa: E731
                                      "score": np.ones(len(images), np.float32)}
    result = printed.printed_check(accept_all_as_3, 0.0, KNOWN, ["0", "1", "2", "3", "4"], layout)
    assert result["letters_refused"] == 0.0 and result["digits_right"] == 0.2
    assert sum(result["letters_passed"].values()) == result["letters"]
