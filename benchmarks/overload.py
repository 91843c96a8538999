"""Benchmark: one server under overload, with and without admission control, while a liveness probe polls it.

    .venv/bin/python -m benchmarks.overload [--connections 256] [--seconds 15]

Starts ``openset-serve`` (one worker, the shipped default model) on 127.0.0.1 and, for each setting, lets
``--connections`` keep-alive connections post a 112x112 PNG digit to ``/v1/predict`` back to back for
``--seconds``, while a probe in a process of its own asks ``/v2/health/live`` every 100 ms with a 1 s timeout on a
new connection each time (Kubernetes' liveness probe with its default timeout). Right after, the same PNG is sent
20 times alone. Prints one table: per setting, the answers by status, the admitted (200) requests' latency, the
probes' failures and latency, and the requests right after. The load generator is Python (asyncio + uvloop) on
the same two cores as the server; it is bounded in connections and time and talks only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import multiprocessing
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.serve_bench import BIN, free_port, server_env, start, stop

MODEL = Path(__file__).resolve().parents[1] / "models" / "mnist-0to4"
NO_LIMIT = {"OPENSET_MAX_QUEUED_IMAGES": "0", "OPENSET_MAX_QUEUE_DELAY_MS": "0"}
TIGHT = {"OPENSET_MAX_QUEUED_IMAGES": "64"}
RUNS = {  # each run: the server's environment, and whether the clients wait as a 503's Retry-After asks
    "defaults (4096 images, 500 ms)": ({}, True),
    "64 images; clients wait as Retry-After asks": (TIGHT, True),
    "64 images; clients retry at once": (TIGHT, False),
    "no limit": (NO_LIMIT, False),
}
TIMEOUT = 10.0  # a load request not answered in this long counts as failed


def png() -> bytes:
    digit = np.zeros((28, 28), np.uint8)
    digit[4:24, 12:16] = 255
    buffer = io.BytesIO()
    Image.fromarray(255 - np.kron(digit, np.ones((4, 4), np.uint8))).save(buffer, "PNG")
    return buffer.getvalue()


def probe(url: str, seconds: float, out) -> None:
    """Every 100 ms, a GET with a 1 s timeout: (latency in s, or None for a failure) into ``out``."""
    results, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        begun = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                ok = answer.status == 200
        except OSError:
            ok = False
        results.append(time.monotonic() - begun if ok else None)
        time.sleep(max(0.0, 0.1 - (time.monotonic() - begun)))
    out.put(results)


async def one_connection(port: int, request: bytes, end: float, answers: list, polite: bool) -> None:
    """Requests back to back on one keep-alive connection until ``end``: (status or "error", latency) each; a
    ``polite`` client waits after a 503 as long as its Retry-After says (as urllib3's retries do)."""
    reader = writer = None
    while time.monotonic() < end:
        begun = time.monotonic()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
            lines = head.decode("latin-1").split("\r\n")
            length = next(int(line.split(":")[1]) for line in lines if line.lower().startswith("content-length"))
            await asyncio.wait_for(reader.readexactly(length), TIMEOUT)
            status = int(lines[0].split()[1])
            answers.append((status, time.monotonic() - begun))
            if any(line.lower() == "connection: close" for line in lines):
                writer.close()
                writer = None
            if polite and status == 503:
                wait = next((float(line.split(":")[1]) for line in lines if line.lower().startswith("retry-after")), 1)
                await asyncio.sleep(min(wait, max(0.0, end - time.monotonic())))
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, StopIteration, ValueError):
            answers.append(("error", time.monotonic() - begun))
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


async def load(port: int, body: bytes, connections: int, seconds: float, polite: bool) -> list:
    request = (f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    answers: list = []
    end = time.monotonic() + seconds
    await asyncio.gather(*(one_connection(port, request, end, answers, polite) for _ in range(connections)))
    return answers


def percentile_ms(values: list[float], share: float) -> float:
    return 1000 * float(np.percentile(values, share)) if values else float("nan")


def run(settings: dict, polite: bool, connections: int, seconds: float, body: bytes, work: Path) -> dict:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start([str(BIN / "openset-serve")], {**server_env(MODEL, port), **settings}, base + "/v2/health/ready",
                   work / "server.log")
    try:
        results = multiprocessing.get_context("spawn").Queue()
        prober = multiprocessing.get_context("spawn").Process(
            target=probe, args=(base + "/v2/health/live", seconds + 1, results))
        prober.start()
        try:
            import uvloop
            answers = uvloop.run(load(port, body, connections, seconds, polite))
        except ImportError:
            answers = asyncio.run(load(port, body, connections, seconds, polite))
        probes = results.get(timeout=60)
        prober.join(10)
        after = []
        for _ in range(20):
            begun = time.monotonic()
            request = urllib.request.Request(base + "/v1/predict", data=body, headers={"Content-Type": "image/png"})
            with urllib.request.urlopen(request, timeout=5) as answer:
                after.append((answer.status, time.monotonic() - begun))
    finally:
        stop(server)
    statuses: dict = {}
    for status, _ in answers:
        statuses[status] = statuses.get(status, 0) + 1
    answered = [seconds for status, seconds in answers if status == 200]
    probed = [p for p in probes if p is not None]
    return {"statuses": statuses, "per_second": len(answered) / seconds,
            "probes": len(probes), "probe_failures": len(probes) - len(probed),
            "admitted_p50": percentile_ms(answered, 50), "admitted_p99": percentile_ms(answered, 99),
            "probe_p50": percentile_ms(probed, 50), "probe_p99": percentile_ms(probed, 99),
            "probe_max": 1000 * max(probed, default=float("nan")),
            "after": sorted({status for status, _ in after}),
            "after_p50": 1000 * statistics.median(seconds for _, seconds in after)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    body = png()
    print("| setting | 200 | 503 | other | admitted/s | admitted p50 / p99 ms | probes failed "
          "| probe p50 / p99 / max ms | right after: status, p50 ms |\n|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as work:
        for name, (settings, polite) in RUNS.items():
            r = run(settings, polite, args.connections, args.seconds, body, Path(work))
            other = {k: v for k, v in r["statuses"].items() if k not in (200, 503)}
            print(f"| {name} | {r['statuses'].get(200, 0)} | {r['statuses'].get(503, 0)} | {other or 0} | "
                  f"{r['per_second']:.0f} | {r['admitted_p50']:.0f} / {r['admitted_p99']:.0f} | "
                  f"{r['probe_failures']} of {r['probes']} | {r['probe_p50']:.1f} / {r['probe_p99']:.1f} / "
                  f"{r['probe_max']:.1f} | {r['after']}, {r['after_p50']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
