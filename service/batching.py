"""Adaptive batching: concurrent requests' images go through the model in one call (as Triton's dynamic batcher).

A request's images join a queue and the request waits for its own rows of the outputs. One worker runs the
model on everything queued (up to ``max_images``) in a thread, so the event loop goes on reading requests
meanwhile; those that arrive during a call are the next call's batch. Nothing waits for company unless
``wait_ms`` asks a batch to stay open that long for more, and the runtime runs a request that is alone in the
server inline, without the thread hop (``ModelRuntime.outputs``). Under load the calls grow by themselves, and
the model's cost per image falls (one pass over the kNN bank for the batch).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

import numpy as np
from starlette.concurrency import run_in_threadpool

Outputs = dict[str, np.ndarray]


class Batcher:
    def __init__(self, run: Callable[[np.ndarray], Outputs], max_images: int, wait_ms: float = 0.0) -> None:
        self.run = run
        self.max_images = max_images
        self.wait = wait_ms / 1000
        self.queue: deque[tuple[np.ndarray, asyncio.Future]] = deque()
        self.worker: asyncio.Task | None = None
        self.calls = 0  # model calls made, and images put through them (for the tests and the benchmark)
        self.images = 0

    @property
    def busy(self) -> bool:
        """A model call is running or queued."""
        return self.worker is not None

    async def __call__(self, images: np.ndarray) -> Outputs:
        """The model's outputs for ``images``, from a call that may hold other requests' images too."""
        future = asyncio.get_running_loop().create_future()
        self.queue.append((images, future))
        if self.worker is None:
            self.worker = asyncio.create_task(self._drain())
        return await future

    def _take(self) -> list[tuple[np.ndarray, asyncio.Future]]:
        taken = [self.queue.popleft()]
        count = len(taken[0][0])
        while self.queue and count + len(self.queue[0][0]) <= self.max_images:
            taken.append(self.queue.popleft())
            count += len(taken[-1][0])
        return taken

    async def _drain(self) -> None:
        try:
            if self.wait:
                await asyncio.sleep(self.wait)
            while self.queue:
                taken = self._take()
                batch = taken[0][0] if len(taken) == 1 else np.concatenate([images for images, _ in taken])
                self.calls, self.images = self.calls + 1, self.images + len(batch)
                try:
                    out = await run_in_threadpool(self.run, batch)
                except Exception as err:  # every request of the call gets the error
                    for _, future in taken:
                        if not future.done():
                            future.set_exception(err)
                    continue
                start = 0
                for images, future in taken:
                    if not future.done():  # (a request whose client went away is cancelled)
                        future.set_result({name: value[start : start + len(images)] for name, value in out.items()})
                    start += len(images)
        finally:
            self.worker = None
