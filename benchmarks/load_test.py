"""Load test: many concurrent clients on mixed endpoints over loopback, for a bounded time.

    python -m benchmarks.load_test [--clients 64] [--seconds 60] [--reload-every 10] [--url http://127.0.0.1:8000]

Without ``--url`` it starts ``openset-serve`` on a free 127.0.0.1 port with the shipped model (and an admin
key, so that ``--reload-every`` can hot-reload the model during the run). Each client loops over a mix of
requests: one PNG upload, one JSON image, a JSON batch of 16, a v2 binary-tensor inference, readiness and
``/metrics``. Prints a table per endpoint: requests, errors (non-2xx or transport failure), p50/p99/max
latency, and the totals, including *dropped* = requests sent but never answered. Exit status 1 if any
request failed or was dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import secrets
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from benchmarks.serve_bench import free_port, start

REPO = Path(__file__).resolve().parents[1]


def requests_mix(model_name: str) -> list[tuple[str, str, str, dict]]:
    """(label, method, path, httpx keyword arguments) of the mixed workload."""
    rng = np.random.default_rng(0)
    digit = (np.eye(28) * 255).astype(np.uint8)
    png = io.BytesIO()
    Image.fromarray(digit).save(png, format="PNG")
    batch = rng.random((16, 28, 28)).round(3).tolist()
    tensor = rng.random((4, 1, 28, 28), dtype=np.float32).tobytes()
    header = json.dumps({"inputs": [{"name": "image", "shape": [4, 1, 28, 28], "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(tensor)}}]}).encode()
    return [
        ("POST /v1/predict png", "POST", "/v1/predict", {"content": png.getvalue(),
                                                          "headers": {"content-type": "image/png"}}),
        ("POST /v1/predict json", "POST", "/v1/predict", {"json": {"image": digit.tolist()}}),
        ("POST /v1/predict/batch x16", "POST", "/v1/predict/batch", {"json": {"images": batch}}),
        ("POST v2 infer binary x4", "POST", f"/v2/models/{model_name}/infer", {
            "content": header + tensor, "headers": {"content-type": "application/octet-stream",
                                                    "inference-header-content-length": str(len(header))}}),
        ("GET /v2/health/ready", "GET", "/v2/health/ready", {}),
        ("GET /metrics", "GET", "/metrics", {}),
    ]


async def client(http: httpx.AsyncClient, mix: list, deadline: float, stats: dict, offset: int) -> None:
    i = offset
    while time.perf_counter() < deadline:
        label, method, path, kwargs = mix[i % len(mix)]
        i += 1
        stats["sent"] += 1
        start_time = time.perf_counter()
        try:
            response = await http.request(method, path, **kwargs)
        except httpx.HTTPError:  # no response at all: dropped (and counted as an error)
            ok = False
        else:
            ok = response.status_code < 300
            stats["answered"] += 1
        stats["latency"].setdefault(label, []).append(time.perf_counter() - start_time)
        stats["errors"][label] = stats["errors"].get(label, 0) + (not ok)


async def reloader(http: httpx.AsyncClient, admin_key: str, every: float, deadline: float, stats: dict) -> None:
    while time.perf_counter() + every < deadline:
        await asyncio.sleep(every)
        response = await http.post("/admin/reload", headers={"X-API-Key": admin_key}, timeout=60)
        stats["reloads"].append(response.status_code)


async def run(url: str, model_name: str, clients: int, seconds: float, admin_key: str | None,
              reload_every: float | None) -> dict:
    limits = httpx.Limits(max_connections=clients + 1, max_keepalive_connections=clients + 1)
    stats: dict = {"sent": 0, "answered": 0, "latency": {}, "errors": {}, "reloads": []}
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:
        mix = requests_mix(model_name)
        deadline = time.perf_counter() + seconds
        tasks = [client(http, mix, deadline, stats, offset) for offset in range(clients)]
        if reload_every and admin_key:
            tasks.append(reloader(http, admin_key, reload_every, deadline, stats))
        started = time.perf_counter()
        await asyncio.gather(*tasks)
        stats["elapsed"] = time.perf_counter() - started
    return stats


def table(stats: dict) -> str:
    lines = ["| endpoint | requests | errors | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|---|"]
    every = []
    for label, times in stats["latency"].items():
        ms = 1000 * np.array(times)
        every.extend(times)
        lines.append(f"| {label} | {len(ms)} | {stats['errors'][label]} | {np.percentile(ms, 50):.1f} | "
                     f"{np.percentile(ms, 99):.1f} | {ms.max():.1f} |")
    ms = 1000 * np.array(every)
    lines.append(f"| **all** | {len(ms)} | {sum(stats['errors'].values())} | {np.percentile(ms, 50):.1f} | "
                 f"{np.percentile(ms, 99):.1f} | {ms.max():.1f} |")
    lines.append("")
    lines.append(f"sent {stats['sent']}, answered {stats['answered']}, dropped {stats['sent'] - stats['answered']}, "
                 f"{stats['answered'] / stats['elapsed']:.0f} requests/s over {stats['elapsed']:.1f} s; "
                 f"hot reloads: {len(stats['reloads'])} (statuses {sorted(set(stats['reloads'])) or '-'})")
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Bounded loopback load test of the service")
    parser.add_argument("--url", default=None, help="a running server (default: start one on 127.0.0.1)")
    parser.add_argument("--model", type=Path, default=REPO / "models" / "mnist-0to4",
                        help="the model directory served (its model.json names the model for v2 paths)")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--reload-every", type=float, default=None, help="hot-reload the model every N seconds")
    return parser


def main(args: argparse.Namespace) -> dict:
    if args.url and not args.url.startswith(("http://127.0.0.1", "http://localhost")):
        raise SystemExit("load tests hit only the loopback interface")
    admin_key, process = os.environ.get("OPENSET_ADMIN_KEY"), None
    url = args.url
    if url is None:
        admin_key = secrets.token_hex(16)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process = start([str(Path(sys.executable).parent / "openset-serve")],
                        {"OPENSET_MODEL_DIR": str(args.model), "OPENSET_PORT": str(port),
                         "OPENSET_ADMIN_KEY": admin_key, "OPENSET_LOG_LEVEL": "warning"}, url)
    try:
        model_name = json.loads((args.model / "model.json").read_text())["name"]  # as the server names it
        stats = asyncio.run(run(url, model_name, args.clients, args.seconds, admin_key, args.reload_every))
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
    print(f"{args.clients} clients, {args.seconds:g} s, mixed endpoints, {url}")
    print(table(stats))
    return stats


if __name__ == "__main__":
    result = main(get_args_parser().parse_args())
    failed = sum(result["errors"].values()) + result["sent"] - result["answered"] + \
        sum(status != 200 for status in result["reloads"])
    sys.exit(1 if failed else 0)
