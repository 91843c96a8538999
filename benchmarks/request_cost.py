"""Benchmark: what one request costs inside the server, without sockets: the ASGI app called in process.

    .venv/bin/python -m benchmarks.request_cost [--requests 3000] [--profile v2]

Builds openset's app (the shipped model, logs at warning) and the bare endpoint (benchmarks/minimal_app.py) and
calls each with the same bodies as benchmarks/serve_bench.py, one request at a time, on one core, the cases
taking turns in rounds of 100 requests. Prints the median over the rounds of the microseconds per request, and
of the part of them spent outside ONNX Runtime's ``run`` (timed on every call): what the server's own layers
cost (routing, guards, validation, decoding, encoding, metrics), free of the model call's noise. ``--profile CASE`` adds
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


class ModelClock:
    """Time spent inside ``onnxruntime.InferenceSession.run``, whichever session calls it: subtracted from a
    request's time, it leaves what the server's own layers cost, without the model call's noise (its time varies
    with the memory traffic of whatever else runs on the machine)."""

    def __init__(self) -> None:
        import onnxruntime as ort

        self.seconds = 0.0
        run = ort.InferenceSession.run

        def timed(session, *args, **kwargs):
            start = time.perf_counter()
            try:
                return run(session, *args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        ort.InferenceSession.run = timed


async def per_request(app, case: tuple, requests: int, clock: ModelClock) -> tuple[float, float]:
    """(µs per request, of which µs outside the model call) over ``requests`` requests."""
    model_before, start = clock.seconds, time.perf_counter()
    for _ in range(requests):
        await call(app, *case)
    total, model = time.perf_counter() - start, clock.seconds - model_before
    return total / requests * 1e6, (total - model) / requests * 1e6


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
    parser.add_argument("--requests", type=int, default=3000, help="per case, in rounds of 100, the cases taking turns")
    parser.add_argument("--profile", choices=["v1", "v2", "binary"], default=None)
    args = parser.parse_args()
    os.environ.setdefault("OPENSET_MODEL_DIR", str(MODEL))
    sys.path.insert(0, str(REPO / "benchmarks"))
    clock = ModelClock()
    from minimal_app import app as bare  # (reads OPENSET_MODEL_DIR)

    from service.main import create_app
    from service.settings import Settings

    app = create_app(Settings(model_dir=os.environ["OPENSET_MODEL_DIR"], log_level="warning"))
    async with app.router.lifespan_context(app):
        found = cases(app.state.repository.default.name)
        apps = {"bare": bare, "v1": app, "v2": app, "binary": app}
        for name, target in apps.items():  # warm-up, and a check that the case is answered
            for _ in range(100):
                if (status := await call(target, *found[name])) != 200:
                    raise SystemExit(f"{name} answered {status}")
        rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in apps}
        for _ in range(max(1, args.requests // 100)):
            for name, target in apps.items():
                rounds[name].append(await per_request(target, found[name], 100, clock))
        print("| case | µs per request (median of rounds) | of which outside the model call |")
        print("|---|---|---|")
        names = {"bare": "bare endpoint, JSON", "v1": "openset v1 raw JSON", "v2": "openset v2 JSON",
                 "binary": "openset v2 binary"}
        for name, measured in rounds.items():
            whole, outside = (statistics.median(column) for column in zip(*measured, strict=True))
            print(f"| {names[name]} | {whole:.0f} | {outside:.0f} |")
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            for _ in range(args.requests):
                await call(app, *found[args.profile])
            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    asyncio.run(main())
