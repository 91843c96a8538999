"""Admission control: a bounded amount of inference work, done off the event loop (as Triton's queue policy).

An inference request is admitted with its images before any work is done for them. While ``max_images`` images
are admitted and not yet answered, another request is refused at once — ``503`` with ``Retry-After`` — instead of
queueing (into an empty queue a request is admitted whatever its size). Work that waited longer than
``max_delay`` before it could start is refused the same way, and not done. Both are counted in ``/metrics``
(``openset_requests_shed_total{reason}``). The server stays as fast as its cores allow, and the clients of an
overloaded one learn it at once, to go elsewhere or come back.

The work itself — decoding and laying out pictures, model calls — runs in a thread pool of its own
(``threads``). ONNX Runtime, Pillow and numpy release the GIL, so the event loop stays free to read requests and
to answer health checks, readiness and metrics at once, whatever the load. A request alone in the server, with
a few images, has its model call inline instead (``ModelRuntime.outputs``): the thread hop would cost it more
than the call.

The gateway (``service.gateway``) also keeps here the count of requests in flight, which the model runtimes
read to tell a lone request from one among others.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

from service.errors import ServiceError

T = TypeVar("T")
QUEUE_FULL, QUEUE_DELAY = "queue_full", "queue_delay"  # the reasons a request is shed


class Admission:
    def __init__(self, max_images: int = 0, max_delay: float = 0.0, threads: int = 2, retry_after: int = 1,
                 on_shed: Callable[[str], None] | None = None) -> None:
        """``max_images``, ``max_delay`` (seconds): the limits (0: none); ``on_shed(reason)``: counts a refusal."""
        self.max_images, self.max_delay, self.retry_after = max_images, max_delay, retry_after
        self.on_shed = on_shed
        self.images = 0  # admitted and not answered
        self.requests = 0  # the server's requests in flight (every route; counted by the gateway)
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="openset-work")

    def refused(self, reason: str) -> ServiceError:
        if self.on_shed is not None:
            self.on_shed(reason)
        why = "too much work queued" if reason == QUEUE_FULL else "queued work waited too long"
        return ServiceError(f"server overloaded ({why}): retry later", 503, {"Retry-After": str(self.retry_after)})

    def check(self) -> None:
        """Refuse at once while the queue is full (before a request's body is even read)."""
        if self.max_images and self.images >= self.max_images:
            raise self.refused(QUEUE_FULL)

    @contextmanager
    def admitted(self, images: int):
        """Hold ``images`` in the queue while the request's work is done; refused if they do not fit."""
        if self.max_images and self.images and self.images + images > self.max_images:
            raise self.refused(QUEUE_FULL)
        self.images += images
        try:
            yield
        finally:
            self.images -= images

    def late(self, since: float) -> ServiceError | None:
        """The refusal of work queued at ``since`` (``time.monotonic()``) that would start now, if too late."""
        if self.max_delay and time.monotonic() - since > self.max_delay:
            return self.refused(QUEUE_DELAY)
        return None

    async def run(self, call: Callable[..., T], *args) -> T:
        """``call(*args)`` in the work pool, unless it waited there longer than the delay allows."""
        since = time.monotonic()

        def timed() -> T:
            if (refusal := self.late(since)) is not None:
                raise refusal
            return call(*args)

        return await asyncio.get_running_loop().run_in_executor(self.pool, timed)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
