"""Hostile clients against the real server: each gets a 4xx/408 in bounded time and memory stays bounded."""

import http.client
import io
import json
import socket
import struct
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from .conftest import running_server

SECONDS = 10  # every hostile request must be answered well within this


def png_of_zeros(width: int, height: int) -> bytes:
    """A valid greyscale PNG of ``width`` x ``height`` black pixels, compressed row by row (never in memory):
    a few hundred kilobytes that would decode to ``width * height`` bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row, parts = zlib.compressobj(9), b"\0" * (width + 1), []
    for _ in range(height):
        parts.append(packer.compress(row))
    parts.append(packer.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def digit_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.eye(28) * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def noise_png() -> bytes:
    """Incompressible pixels, so that cutting the file removes pixel data (not just the trailer)."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def multipart(parts: int) -> tuple[bytes, str]:
    boundary = "hostileboundary"
    field = f'--{boundary}\r\nContent-Disposition: form-data; name="f"\r\n\r\nx\r\n'.encode()
    return field * parts + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


IMAGE = "image/png"
CASES = {
    # name: (path, body, content type, acceptable statuses)
    "decompression bomb, 625 MP in 600 kB": ("/v1/predict", lambda: png_of_zeros(25_000, 25_000), IMAGE, {400}),
    "100-megapixel image": ("/v1/predict", lambda: png_of_zeros(10_000, 10_000), IMAGE, {400}),
    "truncated PNG": ("/v1/predict", lambda: noise_png()[:400], IMAGE, {400}),
    "multipart with 10,000 parts": ("/v1/predict/batch", lambda: multipart(10_000)[0],
                                    multipart(1)[1], {400, 413}),
    "JSON nested 10,000 deep": ("/v1/predict", lambda: b"[" * 10_000 + b"]" * 10_000, "application/json", {422}),
    "JSON nested 10,000 deep, v2": ("/v2/models/mnist-0to4/infer", lambda: b'{"inputs": ' + b"[" * 10_000
                                    + b"]" * 10_000 + b"}", "application/json", {400, 422}),
    "batch of 257 (limit 256)": ("/v1/predict/batch", lambda: json.dumps({"images": [[[0] * 28] * 28] * 257})
                                 .encode(), "application/json", {413}),
    "body of 11 MB (limit 10 MB)": ("/v1/predict", lambda: b"\0" * (11 * 1024 * 1024), IMAGE, {413}),
}


@pytest.fixture(scope="module")
def server(shipped_model_dir):
    with running_server(shipped_model_dir, header_timeout="1", body_timeout="1") as (url, process):
        yield url, process


def test_hostile_inputs_get_4xx_in_bounded_time_and_memory(server):
    url, process = server
    with httpx.Client(base_url=url, timeout=SECONDS) as http:
        for _ in range(20):  # warm up: the first requests allocate the session's buffers
            assert http.post("/v1/predict", content=digit_png(), headers={"content-type": IMAGE}).status_code == 200
        before = rss_mib(process.pid)
        for _ in range(3):
            for name, (path, body, media, expected) in CASES.items():
                start = time.perf_counter()
                response = http.post(path, content=body(), headers={"content-type": media})
                elapsed = time.perf_counter() - start
                assert response.status_code in expected, f"{name}: {response.status_code} {response.text[:200]}"
                assert response.json()["error"], name
                assert elapsed < SECONDS / 2, f"{name} took {elapsed:.1f} s"
        after = rss_mib(process.pid)
        assert http.post("/v1/predict", content=digit_png(), headers={"content-type": IMAGE}).status_code == 200
    print(f"RSS before {before:.0f} MiB, after 3 rounds of {len(CASES)} hostile requests {after:.0f} MiB")
    assert after - before < 100, f"RSS grew from {before:.0f} to {after:.0f} MiB"


# A request whose headers are complete and whose body stops after 4 of its 1,000 bytes.
STALLED_BODY = (b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n"
                b"\r\n\x89PNG")


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def connect(url: str) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port_of(url)), timeout=SECONDS)


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_slow_clients_get_408_and_others_are_still_served(server):
    url, _ = server
    slow_heads, slow_bodies = [], []
    for _ in range(25):  # slowloris: a request line and half a header, then nothing
        sock = connect(url)
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        slow_heads.append(sock)
    for _ in range(25):  # complete headers, then a trickle of body
        sock = connect(url)
        sock.sendall(STALLED_BODY)
        slow_bodies.append(sock)
    start = time.perf_counter()
    assert httpx.get(f"{url}/v2/health/ready", timeout=SECONDS).status_code == 200  # others are served meanwhile
    for sock in slow_heads + slow_bodies:
        answer = read_all(sock)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert time.perf_counter() - start < 5  # deadlines of 1 s, not the client's patience


def requests_counted(url: str, status: int) -> float:
    """openset_requests_total of POST /v1/predict answered with ``status``, read from /metrics."""
    families = text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=SECONDS).text)
    return sum(sample.value for family in families if family.name == "openset_requests" for sample in family.samples
               if sample.name == "openset_requests_total" and sample.labels == {
                   "route": "/v1/predict", "method": "POST", "status": str(status)})


def counted_soon(url: str, status: int, expected: float) -> bool:
    """Whether the count of ``status`` reaches ``expected`` within the test's patience: the gateway counts a
    request whose client has gone once its handler has seen it go."""
    deadline = time.monotonic() + SECONDS
    while requests_counted(url, status) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return requests_counted(url, status) == expected


def test_a_stalled_body_is_answered_408_and_counted(server):
    url, _ = server
    before = requests_counted(url, 408)
    sock = connect(url)
    sock.sendall(STALLED_BODY)
    answer = read_all(sock)
    sock.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and b"connection: close" in head.lower(), answer[:200]
    assert json.loads(body) == {"error": "request body not received in time"}
    assert counted_soon(url, 408, before + 1)


def test_a_client_gone_mid_body_is_counted_499_and_not_logged_as_an_error(server):
    url, process = server
    before = requests_counted(url, 499)
    sock = connect(url)
    sock.sendall(STALLED_BODY)
    time.sleep(0.2)  # (the server has read the head and waits for the body)
    sock.close()
    assert counted_soon(url, 499, before + 1)
    assert "unhandled error" not in process.log.read_text()


def test_a_body_that_keeps_coming_is_served_past_the_deadline(server):
    """The body deadline (1 s here) is for each read, not for the whole body: a slow upload that never stalls
    for a second is answered, even after 2 s."""
    url, _ = server
    image = digit_png()
    sock = connect(url)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nConnection: close\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(image))
    start, pieces = time.monotonic(), np.array_split(np.frombuffer(image, np.uint8), 6)
    for piece in pieces:
        time.sleep(0.4)
        sock.sendall(piece.tobytes())
    answer = read_all(sock)
    sock.close()
    assert time.monotonic() - start > 2
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answer[:200]
    assert "label" in json.loads(body)


def test_a_stalled_head_on_a_kept_alive_connection_is_answered_408(server):
    url, _ = server
    connection = http.client.HTTPConnection("127.0.0.1", port_of(url), timeout=SECONDS)
    connection.request("GET", "/v2/health/ready")
    first = connection.getresponse()
    assert first.status == 200 and first.read() and not first.will_close
    connection.sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # the next one stalls
    answer = read_all(connection.sock)
    connection.close()
    assert answer.startswith(b"HTTP/1.1 408") and answer.endswith(b'{"error": "request headers not received in time"}')
