"""Benchmark: ONNX Runtime in process, and the service over loopback under wrk.

    python benchmarks/serve_bench.py [--model models/mnist-0to4] [--seconds 8]

Prints one table: requests/s and latency p50/p99 for each case, and the ratio of the service's
throughput to a minimal FastAPI endpoint running the same ONNX session (benchmarks/minimal_app.py),
measured side by side in the same run. Needs wrk (Debian package) for the HTTP cases. Only
127.0.0.1 is loaded, for a bounded time.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def in_process(model: Path, batch: int, seconds: float) -> dict:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model / "model.onnx"), options, providers=["CPUExecutionProvider"])
    images = np.random.default_rng(0).random((batch, 1, 28, 28), dtype=np.float32)
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        session.run(None, {"image": images})
        times.append(time.perf_counter() - start)
    times = np.array(times)
    return {"case": f"onnxruntime in process, batch {batch}", "rps": len(times) / times.sum(),
            "images_per_s": batch * len(times) / times.sum(),
            "p50_ms": 1000 * np.percentile(times, 50), "p99_ms": 1000 * np.percentile(times, 99)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command: list[str], env: dict, url: str) -> subprocess.Popen:
    process = subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            urllib.request.urlopen(url, timeout=1)
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"server did not start: {command}")


LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "{ctype}"
local f = io.open("{path}", "rb")
wrk.body = f:read("*all")
f:close()
"""


def run_wrk(url: str, body: bytes, ctype: str, connections: int, seconds: float, workdir: Path) -> dict:
    payload = workdir / f"body-{abs(hash(body))}.bin"
    payload.write_bytes(body)
    script = workdir / f"post-{abs(hash((body, ctype)))}.lua"
    script.write_text(LUA.format(ctype=ctype, path=payload))
    done = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script), url],
                          capture_output=True, text=True, timeout=seconds + 30)
    out = done.stdout
    if "Requests/sec" not in out:
        raise RuntimeError(f"wrk failed on {url}: {done.stdout[-500:]} {done.stderr[-500:]}")

    def ms(label: str) -> float:
        value, unit = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50_ms": ms("50"), "p99_ms": ms("99"), "errors": int(errors.group(1)) if errors else 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "mnist-0to4")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    rows = [in_process(args.model, 1, args.seconds / 2), in_process(args.model, 256, args.seconds / 2)]
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install wrk")
    digit = np.zeros((28, 28), np.uint8)
    digit[4:24, 13:15] = 255
    png = io.BytesIO()
    Image.fromarray(255 - np.kron(digit, np.ones((4, 4), np.uint8))).save(png, "PNG")
    bodies = {
        "raw 28x28 JSON": (b'{"image": ' + json.dumps(digit.tolist()).encode() + b"}", "application/json",
                           "/v1/predict"),
        "PNG upload (112x112)": (png.getvalue(), "image/png", "/v1/predict"),
        "batch of 64, JSON": (json.dumps({"images": [digit.tolist()] * 64}).encode(), "application/json",
                              "/v1/predict/batch"),
    }
    bin_dir = Path(sys.executable).parent
    service_port, minimal_port = free_port(), free_port()
    env = {"OPENSET_MODEL_DIR": str(args.model), "OPENSET_LOG_LEVEL": "warning"}
    service = start([str(bin_dir / "openset-serve")], {**env, "OPENSET_PORT": str(service_port)},
                    f"http://127.0.0.1:{service_port}/v2/health/ready")
    minimal = start([str(bin_dir / "uvicorn"), "minimal_app:app", "--port", str(minimal_port), "--log-level",
                     "warning", "--no-access-log", "--app-dir", str(REPO / "benchmarks")], env,
                    f"http://127.0.0.1:{minimal_port}/docs")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            for connections in (1, args.concurrency):
                raw = (np.asarray(digit, np.float32) / 255).tobytes()
                base = run_wrk(f"http://127.0.0.1:{minimal_port}/score", raw, "application/octet-stream",
                               connections, args.seconds, work)
                rows.append({"case": f"minimal FastAPI + same session, c={connections}", **base})
                for name, (body, ctype, path) in bodies.items():
                    row = run_wrk(f"http://127.0.0.1:{service_port}{path}", body, ctype, connections, args.seconds,
                                  work)
                    if name.startswith("raw"):
                        row["ratio"] = row["rps"] / base["rps"]
                    rows.append({"case": f"service {name}, c={connections}", **row})
    finally:
        for process in (service, minimal):
            process.terminate()
            process.wait(timeout=10)

    print("| case | requests/s | p50 ms | p99 ms | errors | service / minimal |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        ratio = f"{row['ratio']:.2f}" if "ratio" in row else ""
        extra = f" ({row['images_per_s']:.0f} images/s)" if "images_per_s" in row else ""
        print(f"| {row['case']} | {row['rps']:.0f}{extra} | {row['p50_ms']:.3f} | {row['p99_ms']:.3f} | "
              f"{row.get('errors', 0)} | {ratio} |")


if __name__ == "__main__":
    main()
