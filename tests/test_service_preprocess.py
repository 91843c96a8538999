"""Preprocessing of real images: MNIST's own procedure, checked with real MNIST digits."""

import io

import numpy as np
import pytest
from PIL import Image

from openset.data import load_dataset
from service.preprocess import InputError, centre_of_mass, decode, from_array, from_image_bytes, mnist_like

MAX_PIXELS = 40_000_000


def png(array: np.ndarray, mode: str = "L", fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8), mode=mode).save(buffer, fmt)
    return buffer.getvalue()


def as_photo(digit: np.ndarray, scale: int, shift: tuple[int, int], rng) -> bytes:
    """A digit rendered black on white, enlarged, off-centre on a bigger sheet, with a little paper noise."""
    big = np.asarray(Image.fromarray((digit * 255).astype(np.uint8)).resize((28 * scale, 28 * scale),
                                                                           Image.Resampling.BICUBIC))
    sheet = np.zeros((28 * scale + 60, 28 * scale + 80), np.float64)
    top, left = 30 + shift[0], 40 + shift[1]
    sheet[top : top + big.shape[0], left : left + big.shape[1]] = big
    paper = 235 + rng.normal(0, 4, sheet.shape)
    return png(np.clip(paper - sheet * 0.9, 0, 255))


@pytest.fixture(scope="module")
def digits(data_dir):
    test = load_dataset("mnist", train=False, root=data_dir)
    keep = np.nonzero(test.labels.numpy() < 5)[0][:300]
    return test.images[keep, 0].numpy(), test.labels[keep].numpy()


def test_mnist_digits_survive_the_round_trip(digits):
    """An MNIST digit already in MNIST's layout comes back (almost) unchanged."""
    images, _ = digits
    similarity = [np.corrcoef(from_image_bytes(png(image * 255), MAX_PIXELS).ravel(), image.ravel())[0, 1]
                  for image in images[:100]]
    assert np.median(similarity) > 0.99 and min(similarity) > 0.7


def test_photos_of_digits_classify_as_well_as_the_originals(digits, shipped_runtime):
    images, labels = digits
    rng = np.random.default_rng(0)
    photos = np.stack([
        from_image_bytes(as_photo(img, scale=int(rng.integers(2, 6)), shift=tuple(rng.integers(-25, 25, 2)), rng=rng),
                         MAX_PIXELS) for img in images
    ])
    original = np.array([p.label for p in shipped_runtime.predict(images[:, None])])
    rendered = np.array([p.label for p in shipped_runtime.predict(photos[:, None])])
    truth = labels.astype(str)
    assert np.mean(rendered == truth) >= np.mean(original == truth) - 0.02


def test_dark_on_light_is_inverted_and_centred():
    sheet = np.full((100, 60), 250.0)
    sheet[10:40, 5:15] = 0  # a dark bar in the top-left corner
    out = mnist_like(decode(png(sheet), MAX_PIXELS))
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert out.max() == pytest.approx(1.0, abs=0.05) and out[0].max() == 0  # white ink, empty border
    rows, cols = np.nonzero(out > 0.5)
    assert rows.max() - rows.min() + 1 == pytest.approx(20, abs=1)  # tall side scaled to 20
    mass = out.sum()
    cy = (out.sum(1) * np.arange(28)).sum() / mass
    cx = (out.sum(0) * np.arange(28)).sum() / mass
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5


def test_transparent_drawing_uses_the_strokes():
    rgba = np.zeros((200, 200, 4), np.uint8)
    rgba[40:160, 95:105] = (0, 0, 0, 255)  # black stroke on a transparent canvas
    out = from_image_bytes(png(rgba, mode="RGBA"), MAX_PIXELS)
    assert out.sum() > 20 and out[:, :5].sum() == 0


def test_blank_image_is_all_background():
    assert from_image_bytes(png(np.full((50, 50), 255.0)), MAX_PIXELS).sum() == 0


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "WEBP", "GIF"])
def test_every_supported_format_decodes(fmt):
    sheet = np.full((64, 64), 255.0)
    sheet[10:54, 28:36] = 0
    out = from_image_bytes(png(sheet, fmt=fmt), MAX_PIXELS)
    assert out.max() > 0.9


def test_animated_gif_uses_the_first_frame():
    first = Image.fromarray(np.where(np.arange(64)[:, None] < 32, 0, 255).astype(np.uint8).repeat(64, 1))
    second = Image.fromarray(np.full((64, 64), 255, np.uint8))
    buffer = io.BytesIO()
    first.save(buffer, "GIF", save_all=True, append_images=[second])
    assert from_image_bytes(buffer.getvalue(), MAX_PIXELS).max() > 0.9


def test_unsupported_format_is_415():
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, "TIFF")
    with pytest.raises(InputError) as err:
        decode(buffer.getvalue(), MAX_PIXELS)
    assert err.value.status == 415


NOISE_PNG = png(np.random.default_rng(0).integers(0, 256, (64, 64)))


@pytest.mark.parametrize("data", [b"", b"not an image", NOISE_PNG[: len(NOISE_PNG) // 2]])
def test_undecodable_or_truncated_is_400(data):
    with pytest.raises(InputError) as err:
        decode(data, MAX_PIXELS)
    assert err.value.status == 400


def test_too_many_pixels_is_refused_before_decoding():
    with pytest.raises(InputError, match="exceeds") as err:
        decode(png(np.zeros((100, 100))), max_pixels=5000)
    assert err.value.status == 400


@pytest.mark.parametrize("scale", [1.0, 255.0])
def test_ready_arrays_in_either_range(scale):
    array = np.random.default_rng(0).random((28, 28))
    np.testing.assert_allclose(from_array(array * scale), array, atol=1e-6)
    assert from_array((array * scale)[None, None]).shape == (28, 28)


@pytest.mark.parametrize("bad, fragment", [
    (np.zeros((27, 28)), "28x28"),
    (np.full((28, 28), np.nan), "NaN"),
    (np.full((28, 28), -1.0), "[0, 1]"),
    (np.full((28, 28), 300.0), "[0, 1]"),
    ([["a"] * 28] * 28, "numbers"),
])
def test_bad_arrays_are_422(bad, fragment):
    with pytest.raises(InputError, match=fragment.replace("[", r"\[").replace("]", r"\]")) as err:
        from_array(bad)
    assert err.value.status == 422


def test_centre_of_mass_clips_at_the_edges():
    patch = np.zeros((20, 3), np.float32)
    patch[:, 0] = 1
    out = centre_of_mass(patch)
    assert out.sum() == pytest.approx(20)
