"""Benchmark: openset's service beside the Python model servers, on the same ONNX model and the same payloads.

    make peers        # once (else the script creates them): the peers' venvs under .peers/
    .venv/bin/python benchmarks/serve_bench.py [--seconds 2] [--rounds 3] [--connections 1,16,64]
                                               [--model models/mnist-0to4]
                                               [--peers bare,kserve,bentoml,litserve | --no-peers]

Prints one Markdown table: requests/s and latency p50/p99 under wrk (`-t1`, 1, 16 and 64 connections) for
- openset (`openset-serve`): v1 raw (POST /v1/predict {"image": 28x28 ints}), v1 PNG (the 112x112 PNG),
  v2 JSON (784 UINT8 in `data`, shape [1, 1, 28, 28]), v2 binary (Triton's binary tensor extension), and
  POST /v1/predict/batch with 64 images;
- the peers, each running the same ONNX file through onnxruntime with one ONNX thread: the bare FastAPI
  endpoint (benchmarks/minimal_app.py, openset's v1 raw body), KServe's ModelServer (openset's v2 JSON body:
  KServe takes UINT8 too), BentoML and LitServe (openset's v1 raw body); their servers are in benchmarks/peers/;
- ONNX Runtime in process (batch 1 and 256, one caller), as the floor under them all;
and on each peer's row the ratio of openset's v2 JSON and v1 raw throughput to the peer's, at each connection
count. Every server is started at once, one worker each, logs at warning or off, on 127.0.0.1 at a free port;
then, round after round, each case runs at each connection count in turn (an idle server costs nothing), so that
the machine's drift over the run falls on all of them alike; after each run the server is left to finish what wrk
left in flight before the next begins. A figure is the median of its rounds, a ratio the
median of the rounds' ratios. Each peer runs in its own venv (.peers/<name>, from benchmarks/peers/<name>.txt),
so the project's dependencies stay clean; one that cannot be installed or started, or that rejects its request,
gets "not available: <reason>" rows. wrk (Debian package) shares the 2 cores with the server under test.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
PEERS_DIR = REPO / ".peers"
BIN = Path(sys.executable).parent
CONNECTIONS = (1, 16, 64)  # wrk's -c for each case (--connections)
RATIOS = ("openset v2 JSON", "openset v1 raw")  # openset's throughput in these cases over each peer's


class Unavailable(Exception):
    """A server that cannot be installed, started or asked: its rows say why."""


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
    return {"rps": len(times) / times.sum(), "p50_ms": 1000 * np.percentile(times, 50),
            "p99_ms": 1000 * np.percentile(times, 99), "errors": 0}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def last_line(log: Path | None) -> str:
    lines = log.read_text(errors="replace").strip().splitlines() if log and log.exists() else []
    return lines[-1][:200] if lines else "no output"


def start(command: list[str], env: dict, url: str, log: Path | None = None, timeout: float = 10) -> subprocess.Popen:
    """Start a server in its own process group (see stop()) and wait until `url` answers 200."""
    out = log.open("wb") if log else subprocess.DEVNULL
    process = subprocess.Popen(command, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
                               start_new_session=True)
    if log:
        out.close()  # the server has its own copy
    end = time.monotonic() + timeout
    while time.monotonic() < end and process.poll() is None:
        try:
            urllib.request.urlopen(url, timeout=1)
            return process
        except OSError:
            time.sleep(0.1)
    reason = f"exited with {process.returncode}" if process.poll() is not None else f"not ready in {timeout:g} s"
    stop(process)
    raise RuntimeError(f"server {reason}: {last_line(log) if log else command}")


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to a process group: False once it has no process left."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False


def stop(process: subprocess.Popen) -> None:
    """End the server and every process it started: SIGTERM to its process group, then SIGKILL to what is left
    of it shortly after the server exits (LitServe's inference worker outlives its server) or after 15 s."""
    signal_group(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pass
    end = time.monotonic() + 2
    while time.monotonic() < end and signal_group(process.pid, 0):
        time.sleep(0.05)
    signal_group(process.pid, signal.SIGKILL)
    process.wait()


LUA = """
wrk.method = "POST"
{headers}
local f = io.open("{path}", "rb")
wrk.body = f:read("*all")
f:close()
"""


def run_wrk(url: str, body: bytes, ctype: str, connections: int, seconds: float, workdir: Path,
            headers: dict | None = None) -> dict:
    payload = workdir / f"body-{abs(hash(body))}.bin"
    payload.write_bytes(body)
    headers = {"Content-Type": ctype, **(headers or {})}
    script = workdir / f"post-{abs(hash((body, tuple(headers.items()))))}.lua"
    script.write_text(LUA.format(path=payload, headers="\n".join(
        f'wrk.headers["{name}"] = "{value}"' for name, value in headers.items())))
    done = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script), url],
                          capture_output=True, text=True, timeout=seconds + 30)
    out = done.stdout
    if "Requests/sec" not in out:
        raise RuntimeError(f"wrk failed on {url}: {done.stdout[-500:]} {done.stderr[-500:]}")

    def ms(label: str) -> float:
        value, unit = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, sockets.groups())) if sockets else 0)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50_ms": ms("50"), "p99_ms": ms("99"), "errors": errors}


# --- the servers: openset and its peers -------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    command: Callable[[Path, int], list[str]]  # (model dir, port) -> the command line
    ready: str  # a GET path that answers 200 once the model is loaded
    venv: str | None = None  # the peer's venv .peers/<venv>, made from benchmarks/peers/<venv>.txt


def peer_bin(venv: str, program: str) -> str:
    return str(PEERS_DIR / venv / "bin" / program)


SERVERS = {
    "openset": Server(lambda model, port: [str(BIN / "openset-serve")], "/v2/health/ready"),
    "bare": Server(lambda model, port: [str(BIN / "uvicorn"), "minimal_app:app", "--app-dir", str(BENCH),
                                        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                                        "--no-access-log"], "/docs"),
    "kserve": Server(lambda model, port: [peer_bin("kserve", "python"), str(BENCH / "peers" / "kserve_server.py"),
                                          str(model), str(port)], "/v2/health/ready", venv="kserve"),
    "bentoml": Server(lambda model, port: [peer_bin("bentoml", "bentoml"), "serve", "bentoml_service:Digits",
                                           "--working-dir", str(BENCH / "peers"), "--host", "127.0.0.1",
                                           "--port", str(port)], "/readyz", venv="bentoml"),
    "litserve": Server(lambda model, port: [peer_bin("litserve", "python"),
                                            str(BENCH / "peers" / "litserve_server.py"), str(model), str(port)],
                       "/health", venv="litserve"),
}
PEERS = [name for name in SERVERS if name != "openset"]


def server_env(model: Path, port: int) -> dict:
    """One environment for every server: each reads what it knows. openset runs one worker unless OPENSET_WORKERS
    says otherwise (``OPENSET_WORKERS=2 python benchmarks/serve_bench.py --no-peers``); the peers run one."""
    return {"OPENSET_MODEL_DIR": str(model), "OPENSET_PORT": str(port), "OPENSET_LOG_LEVEL": "warning",
            "OPENSET_WORKERS": os.environ.get("OPENSET_WORKERS", "1"), "OPENSET_ONNX_THREADS": "1",
            "KSERVE_LOGLEVEL": "WARNING", "BENTOML_DO_NOT_TRACK": "True", "OMP_NUM_THREADS": "1"}


def ensure_venv(name: str) -> None:
    """Create .peers/<name> from benchmarks/peers/<name>.txt, as `make peers` does, unless it is there already."""
    venv, requirements = PEERS_DIR / name, BENCH / "peers" / f"{name}.txt"
    stamp = venv / ".installed"  # a copy of the requirements it was installed from
    if stamp.exists() and stamp.read_text() == requirements.read_text():
        return
    print(f"creating {venv.relative_to(REPO)} from {requirements.relative_to(REPO)} (about a minute)",
          file=sys.stderr)
    for command in ([sys.executable, "-m", "venv", str(venv)],
                    [str(venv / "bin" / "pip"), "install", "-qq", "-r", str(requirements)]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=1200)
        if done.returncode:
            lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
            raise Unavailable(f"`{' '.join(command[:3])}` failed: {lines[-1][:200]}")
    shutil.copyfile(requirements, stamp)


# --- the cases: one server, one request ------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    server: str
    path: str
    body: bytes
    ctype: str = "application/json"
    headers: dict = field(default_factory=dict)
    images: int = 1


def cases(model_name: str) -> list[Case]:
    digit = np.zeros((28, 28), np.uint8)
    digit[4:24, 13:15] = 255
    png = io.BytesIO()
    Image.fromarray(255 - np.kron(digit, np.ones((4, 4), np.uint8))).save(png, "PNG")
    raw = json.dumps({"image": digit.tolist()}).encode()
    tensor = {"name": "image", "shape": [1, 1, 28, 28], "datatype": "UINT8"}
    v2_json = json.dumps({"inputs": [{**tensor, "data": digit.ravel().tolist()}]}).encode()
    header = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": digit.size}}]}).encode()
    v2 = f"/v2/models/{model_name}/infer"
    return [
        Case("openset v1 raw", "openset", "/v1/predict", raw),
        Case("openset v1 PNG (112x112)", "openset", "/v1/predict", png.getvalue(), "image/png"),
        Case("openset v2 JSON", "openset", v2, v2_json),
        Case("openset v2 binary", "openset", v2, header + digit.tobytes(), "application/octet-stream",
             {"Inference-Header-Content-Length": str(len(header))}),
        Case("openset batch 64", "openset", "/v1/predict/batch", json.dumps({"images": [digit.tolist()] * 64}).encode(),
             images=64),
        Case("bare FastAPI endpoint JSON", "bare", "/score", raw),
        Case("KServe v2 JSON", "kserve", v2, v2_json),
        Case("BentoML JSON", "bentoml", "/predict", raw),
        Case("LitServe JSON", "litserve", "/predict", raw),
    ]


def ask_once(base: str, case: Case) -> None:
    """One request before the load: a server that rejects the body is reported, not measured."""
    request = urllib.request.Request(base + case.path, case.body, {"Content-Type": case.ctype, **case.headers})
    try:
        urllib.request.urlopen(request, timeout=10).read()
    except OSError as error:
        detail = error.read().decode(errors="replace")[:150] if hasattr(error, "read") else ""
        raise Unavailable(f"{case.path} answered {error} {detail}".strip()) from error


@contextlib.contextmanager
def serving(name: str, model: Path, work: Path):
    """One server, up until the block ends: yields its base URL (Unavailable if it cannot be made or started)."""
    server, port = SERVERS[name], free_port()
    if server.venv:
        ensure_venv(server.venv)
    base = f"http://127.0.0.1:{port}"
    try:
        process = start(server.command(model, port), server_env(model, port), base + server.ready,
                        log=work / f"{name}.log", timeout=90)
    except RuntimeError as error:
        raise Unavailable(str(error)) from error
    try:
        yield base, process
    finally:
        stop(process)


def group_cpu_seconds(pgid: int) -> float:
    """CPU time used so far by the processes of a process group (a server and the workers it started)."""
    ticks = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # (gone meanwhile)
            continue
        if int(fields[2]) == pgid:  # the fifth field of stat, the third after the command name
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def settle(process: subprocess.Popen, timeout: float = 30) -> None:
    """Wait until a server is idle: requests that wrk left in flight are still being answered after it stops
    (64 connections of 64 images each are seconds of work), and would fall on the next measurement."""
    end, last = time.monotonic() + timeout, group_cpu_seconds(process.pid)
    while time.monotonic() < end:
        time.sleep(0.25)
        now = group_cpu_seconds(process.pid)
        if now - last < 0.025:  # under a tenth of a core
            return
        last = now


def measure(servers: list[str], all_cases: list[Case], model: Path, seconds: int, rounds: int, work: Path,
            connections: tuple[int, ...] = CONNECTIONS) -> dict:
    """Every server up at once (idle ones cost nothing), then ``rounds`` rounds in which each case runs at each
    connection count in turn, so that the machine's drift over the run falls on every server alike:
    {case name: {connections: [row per round]}}, or {case name: "not available: ..."}."""
    results: dict = {}
    with contextlib.ExitStack() as stack:
        bases = {}
        for name in servers:
            print(f"starting {name}", file=sys.stderr)
            try:
                bases[name] = stack.enter_context(serving(name, model, work))  # (base URL, process)
            except Unavailable as error:
                results.update({case.name: f"not available: {error}" for case in all_cases if case.server == name})
        live = []
        for case in (case for case in all_cases if case.server in bases):
            base, process = bases[case.server]
            try:
                ask_once(base, case)
            except Unavailable as error:
                results[case.name] = f"not available: {error}"
                continue
            live.append(case)
            results[case.name] = {c: [] for c in connections}
            # one second of load before the first measurement
            run_wrk(base + case.path, case.body, case.ctype, max(connections), 1, work, case.headers)
            settle(process)
        for turn in range(rounds):
            print(f"round {turn + 1} of {rounds}", file=sys.stderr)
            for case in live:
                base, process = bases[case.server]
                for c in connections:
                    results[case.name][c].append(run_wrk(base + case.path, case.body, case.ctype, c, seconds, work,
                                                         case.headers))
                    settle(process)
    return results


# --- the table ---------------------------------------------------------------------------------------------


def cells(result: dict, images: int, connections: tuple[int, ...]) -> list[str]:
    """Requests/s, p50 and p99 at each connection count (the median of the rounds), and the errors of them all."""
    out = []
    for c in connections:
        rows = result.get(c)
        if not rows:
            out += ["", "", ""]
            continue
        rps, p50, p99 = (statistics.median(row[key] for row in rows) for key in ("rps", "p50_ms", "p99_ms"))
        out += [f"{rps:.0f}" + (f" ({rps * images:.0f} images/s)" if images > 1 else ""), f"{p50:.2f}", f"{p99:.2f}"]
    return out + [str(sum(row["errors"] for rows in result.values() for row in rows))]


def ratios(results: dict, case: Case, connections: tuple[int, ...]) -> list[str]:
    """openset's throughput over this peer's, the median of the rounds' ratios (each round measured both)."""
    if case.server == "openset":
        return [""] * len(RATIOS) * len(connections)
    out = []
    for reference in RATIOS:
        for c in connections:
            ours, theirs = results.get(reference), results[case.name]
            out.append(f"{statistics.median(o['rps'] / t['rps'] for o, t in zip(ours[c], theirs[c], strict=True)):.2f}"
                       if isinstance(ours, dict) else "")
    return out


def table(results: dict, all_cases: list[Case], floor: dict, connections: tuple[int, ...]) -> str:
    header = ["case", *(f"c={c} {what}" for c in connections for what in ("req/s", "p50 ms", "p99 ms")), "errors",
              *(f"{reference} / this, c={c}" for reference in RATIOS for c in connections)]
    width = len(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * width]
    for batch, row in floor.items():
        row_cells = [f"onnxruntime in process, batch {batch} (one caller)", *cells({1: [row]}, batch, connections)]
        lines.append("| " + " | ".join(row_cells + [""] * (width - len(row_cells))) + " |")
    for case in all_cases:
        result = results.get(case.name)
        if result is None:
            continue
        if isinstance(result, str):
            lines.append("| " + " | ".join([case.name, result] + [""] * (width - 2)) + " |")
        else:
            lines.append("| " + " | ".join([case.name, *cells(result, case.images, connections),
                                            *ratios(results, case, connections)]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "mnist-0to4")
    parser.add_argument("--seconds", type=int, default=2, help="per wrk run (and the in-process floor)")
    parser.add_argument("--rounds", type=int, default=3, help="every case at every connection count, in turn")
    parser.add_argument("--connections", default=",".join(map(str, CONNECTIONS)),
                        help="wrk's connection counts, comma-separated")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"a comma-separated subset of {','.join(PEERS)}")
    parser.add_argument("--no-peers", action="store_true", help="openset and the in-process floor only")
    args = parser.parse_args()
    peers = [] if args.no_peers else [name.strip() for name in args.peers.split(",") if name.strip()]
    if unknown := set(peers) - set(PEERS):
        parser.error(f"unknown peers {sorted(unknown)}; known: {PEERS}")
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install wrk")
    connections = tuple(int(c) for c in args.connections.split(","))
    model = args.model.resolve()
    model_name = json.loads((model / "model.json").read_text())["name"]

    floor = {batch: in_process(model, batch, args.seconds) for batch in (1, 256)}
    all_cases = cases(model_name)
    with tempfile.TemporaryDirectory() as tmp:
        results = measure(["openset", *peers], all_cases, model, args.seconds, args.rounds, Path(tmp), connections)
    print(table(results, all_cases, floor, connections))


if __name__ == "__main__":
    main()
