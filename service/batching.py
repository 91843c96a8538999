"""Adaptive batching: concurrent requests' images go through the model in one call (as Triton's dynamic batcher).

A request's images join a queue and the request waits for its own rows of the outputs. One worker runs the
model on everything queued (up to ``max_images``) in the work pool (``service.admission``), so the event loop
goes on reading requests meanwhile; those that arrive during a call are the next call's batch. Nothing waits for
company, and images that waited in the queue longer than the admission's delay are refused (503), not run.
Under load the calls grow by themselves, and the model's cost per image falls (one pass over the kNN bank for
the batch).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from service.admission import Admission

Outputs = dict[str, np.ndarray]


class Batcher:
    def __init__(self, run: Callable[[np.ndarray], Outputs], max_images: int, admission: Admission) -> None:
        self.run = run
        self.max_images = max_images
        self.admission = admission
        self.queue: deque[tuple[np.ndarray, asyncio.Future, float]] = deque()
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
        self.queue.append((images, future, time.monotonic()))
        if self.worker is None:
            self.worker = asyncio.create_task(self._drain())
        return await future

    def _take(self) -> list[tuple[np.ndarray, asyncio.Future]]:
        """The next call's requests; those that waited too long are refused on the way."""
        taken, count = [], 0
        while self.queue:
            if taken and count + len(self.queue[0][0]) > self.max_images:
                break
            images, future, since = self.queue.popleft()
            if (refusal := self.admission.late(since)) is not None:
                if not future.done():
                    future.set_exception(refusal)
                continue
            taken.append((images, future))
            count += len(images)
        return taken

    async def _drain(self) -> None:
        try:
            while self.queue:
                if not (taken := self._take()):
                    continue
                batch = taken[0][0] if len(taken) == 1 else np.concatenate([images for images, _ in taken])
                self.calls, self.images = self.calls + 1, self.images + len(batch)
                try:
                    out = await self.admission.run(self.run, batch)
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
