"""Benchmark: what one request costs inside the server, without sockets: the ASGI app called in process.

    .venv/bin/python -m benchmarks.request_cost [--requests 3000] [--profile v2]

Builds openset's app (the shipped model, logs at warning) and the bare endpoint (benchmarks/minimal_app.py) and
calls each with the same bodies as benchmarks/serve_bench.py, one request at a time, on one core; prints the
median microseconds per request and, beside it, the model call alone (ONNX Runtime, batch 1). The difference is
what openset's layers cost (routing, guards, validation, decoding, encoding, metrics). ``--profile CASE`` adds
cProfile's 25 most expensive functions for that case (``v1``, ``v2`` or ``binary``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "mnist-0to4"


def scope(path: str, body: bytes, headers: dict[str, str]) -> dict:
    raw = [(b"host", b"127.0.0.1"), (b"content-length", str(len(body)).encode()),
           *((k.lower().encode(), v.encode()) for k, v in headers.items())]
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"", "headers": raw,
            "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000), "state": {}}


async def call(app, path: str, body: bytes, headers: dict[str, str]) -> int:
    """One request through the ASGI app; its status."""
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    status = []

    async def receive() -> dict:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # the client stays connected

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope(path, body, headers), receive, send)
    return status[0]


async def median_us(app, case: tuple, requests: int) -> float:
    for _ in range(200):  # warm-up, and a check that the case is answered
        if (status := await call(app, *case)) != 200:
            raise SystemExit(f"{case[0]} answered {status}")
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        await call(app, *case)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def cases(model_name: str) -> dict[str, tuple[str, bytes, dict[str, str]]]:
    digit = np.zeros((28, 28), np.uint8)
    digit[4:24, 13:15] = 255
    tensor = {"name": "image", "shape": [1, 1, 28, 28], "datatype": "UINT8"}
    header = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": 784}}]}).encode()
    as_json = {"content-type": "application/json"}
    return {
        "bare": ("/score", json.dumps({"image": digit.tolist()}).encode(), as_json),
        "v1": ("/v1/predict", json.dumps({"image": digit.tolist()}).encode(), as_json),
        "v2": (f"/v2/models/{model_name}/infer",
               json.dumps({"inputs": [{**tensor, "data": digit.ravel().tolist()}]}).encode(), as_json),
        "binary": (f"/v2/models/{model_name}/infer", header + digit.tobytes(),
                   {"content-type": "application/octet-stream", "inference-header-content-length": str(len(header))}),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--profile", choices=["v1", "v2", "binary"], default=None)
    args = parser.parse_args()
    os.environ.setdefault("OPENSET_MODEL_DIR", str(MODEL))
    sys.path.insert(0, str(REPO / "benchmarks"))
    from minimal_app import app as bare  # (reads OPENSET_MODEL_DIR)
    from minimal_app import session

    from service.main import create_app
    from service.settings import Settings

    app = create_app(Settings(model_dir=os.environ["OPENSET_MODEL_DIR"], log_level="warning"))
    image = np.zeros((1, 1, 28, 28), np.float32)
    session.run(None, {"image": image})
    start = time.perf_counter()
    for _ in range(args.requests):
        session.run(None, {"image": image})
    model_us = (time.perf_counter() - start) / args.requests * 1e6
    async with app.router.lifespan_context(app):
        found = cases(app.state.runtime.name)
        rows = {"bare": await median_us(bare, found["bare"], args.requests)}
        rows.update({name: await median_us(app, found[name], args.requests) for name in ("v1", "v2", "binary")})
        print(f"| case | µs per request | of which outside the model call (model alone: {model_us:.0f} µs) |")
        print("|---|---|---|")
        names = {"bare": "bare endpoint, JSON", "v1": "openset v1 raw JSON", "v2": "openset v2 JSON",
                 "binary": "openset v2 binary"}
        for name, us in rows.items():
            print(f"| {names[name]} | {us:.0f} | {us - model_us:.0f} |")
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            for _ in range(args.requests):
                await call(app, *found[args.profile])
            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    asyncio.run(main())
