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
import importlib
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

from service.errors import ServiceError

T = TypeVar("T")
QUEUE_FULL, QUEUE_DELAY = "queue_full", "queue_delay"  # the reasons a request is shed


class Admission:
    def __init__(self, max_images: int = 0, max_delay: float = 0.0, threads: int = 2, processes: int = 0,
                 retry_after: int = 1, on_shed: Callable[[str], None] | None = None) -> None:
        """``max_images``, ``max_delay`` (seconds): the limits (0: none); ``threads``: the work pool (model calls);
        ``processes``: a pool of processes for the pictures (0: the threads); ``on_shed(reason)``: counts a
        refusal."""
        self.max_images, self.max_delay, self.retry_after = max_images, max_delay, retry_after
        self.on_shed = on_shed
        self.images = 0  # admitted and not answered
        self.requests = 0  # the server's requests in flight (every route; counted by the gateway)
        self.threads, self.processes = threads, processes
        self.pool: ThreadPoolExecutor | None = None  # made when first needed, ended by close (a lifespan may recur)
        self.process_pool: ProcessPoolExecutor | None = None

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

    async def run(self, call: Callable[..., T], *args, cpu_bound: bool = False) -> T:
        """``call(*args)`` in the work pool — in the process pool if ``cpu_bound`` and there is one (``call`` then
        a module's function) — unless it waited there longer than the delay allows."""
        if self.pool is None:
            self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="openset-work")
        pool = self.process_pool if cpu_bound and self.process_pool is not None else self.pool
        done, out = await asyncio.get_running_loop().run_in_executor(
            pool, _unless_late, time.monotonic(), self.max_delay, call, args)
        if not done:
            raise self.refused(QUEUE_DELAY)
        return out

    def start(self, modules: tuple[str, ...] = ()) -> None:
        """Start the process pool, its processes ready, with ``modules`` (those of the functions it will run)
        imported: a first picture would otherwise wait for them, past the queue's delay on a busy machine."""
        if self.processes and self.process_pool is None:
            self.process_pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"))
            for future in [self.process_pool.submit(_imported, modules) for _ in range(self.processes)]:
                future.result()

    def close(self) -> None:
        """Stop the pools: queued work is cancelled, the processes end (with the server, not after it)."""
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None
        if self.process_pool is not None:
            self.process_pool.shutdown(wait=True, cancel_futures=True)
            self.process_pool = None


def _imported(modules: tuple[str, ...]) -> bool:
    for name in modules:
        importlib.import_module(name)
    return True


def _unless_late(since: float, max_delay: float, call: Callable[..., T], args: tuple) -> tuple[bool, T | None]:
    """(True, ``call(*args)``), or (False, None) for work that started over ``max_delay`` after ``since`` (the
    clock is the machine's: the same in a pool's process)."""
    if max_delay and time.monotonic() - since > max_delay:
        return False, None
    return True, call(*args)
