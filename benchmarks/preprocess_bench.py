"""Benchmark: what the service's preprocessing costs per picture (decode, then find and lay out the digit).

    python benchmarks/preprocess_bench.py [--repeat 200]

Prints one table: for each kind of picture a user sends, its size in bytes and the median milliseconds of
``decode`` and of ``mnist_like`` over ``--repeat`` runs, on one core.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import numpy as np
from PIL import Image

from openset import shifts
from openset.data import load_dataset
from service.preprocess import decode, mnist_like

MAX_PIXELS = 40_000_000


def encoded(page: np.ndarray, fmt: str, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.rint(page * 255), 0, 255).astype(np.uint8)).save(buffer, fmt, quality=quality)
    return buffer.getvalue()


def pictures(digit: np.ndarray) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    ink = shifts.upscale(digit)
    photo = shifts.noise(shifts.blur(shifts.shade(shifts.on_paper(ink, rng, paper=0.8), 0.6, rng), 1.5), 0.04, rng)
    big = np.asarray(Image.fromarray((photo * 255).astype(np.uint8)).resize((3000, 3000), Image.Resampling.BILINEAR))
    return {
        "MNIST digit, 28x28 PNG": encoded(digit, "PNG"),
        "drawing, 160x160 PNG": shifts.render_clean(digit, rng),
        "demo pad, 280x280 PNG": encoded(np.asarray(Image.fromarray((shifts.on_paper(ink, rng, page=280) * 255)
                                                                    .astype(np.uint8))) / 255, "PNG"),
        "phone photo, 160x160 JPEG": encoded(photo, "JPEG"),
        "phone photo, 3000x3000 JPEG": encoded(big / 255, "JPEG"),
    }


def median_ms(call, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    digit = load_dataset("mnist", train=False).images[0, 0]
    print("| picture | bytes | decode ms | find and lay out the digit ms |\n|---|---|---|---|")
    for name, data in pictures(digit).items():
        repeat = max(5, args.repeat // 20) if len(data) > 10**6 or "3000" in name else args.repeat
        image = decode(data, MAX_PIXELS)
        print(f"| {name} | {len(data)} | {median_ms(lambda d=data: decode(d, MAX_PIXELS), repeat):.2f} | "
              f"{median_ms(lambda i=image: mnist_like(i), repeat):.2f} |")


if __name__ == "__main__":
    main()
