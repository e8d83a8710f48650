"""Dynamic batching: the images of concurrent requests gathered into one forward pass each.

The ``max_batch_size`` and batch timeout of Ray Serve and LitServe, for one model in one process: see
:class:`MicroBatcher`. It knows nothing of HTTP; :mod:`.serve` puts it behind the routes.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch


class NotRunningError(RuntimeError):
    """:meth:`MicroBatcher.submit` before :meth:`~MicroBatcher.start` or after :meth:`~MicroBatcher.stop` (the
    server answers 503)."""


@dataclass
class _Item:
    image: torch.Tensor
    future: asyncio.Future[torch.Tensor]


class MicroBatcher:
    """Gathers the images of concurrent requests into batches, one forward pass each.

    A pass starts as soon as the model is idle and an image waits, in the call that queued it: the model never
    idles while a request waits for it, and whatever arrives during a pass makes the next batch (up to
    ``max_batch_size``). Started from the request's own call, not from a task of its own, a pass begins while the
    event loop still parses the requests that arrived with it: parsing and the forward pass overlap rather than
    take turns. The first image of a batch waits for company only while another request is on its way (inside
    :meth:`arriving`), and at most ``max_wait_ms``: a lone client pays no wait. Each image's future gets its own
    row.

    Args:
        forward: float images (B, C, H, W) -> float32 logits (B, num_classes) on the CPU. A plain function runs in a
            thread of its own; an object with ``begin(images)`` (:class:`.worker.ModelWorker`) starts its pass at
            once on the event loop and returns an awaitable of the logits.
        max_batch_size: images per forward pass; 1 turns batching off.
        max_wait_ms: how long the first image of a batch may wait for company; 0 takes only what is already queued.
        on_batch: called with ``(batch_size, seconds)`` after each forward pass (metrics).
    """

    def __init__(
        self,
        forward: Callable[[torch.Tensor], torch.Tensor] | Any,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be at least 0, got {max_wait_ms}")
        self.forward, self.max_batch_size, self.max_wait = forward, max_batch_size, max_wait_ms / 1000
        self.on_batch = on_batch
        self.batches = 0  # forward passes run so far
        self._arriving = 0  # requests being read or decoded, which will submit soon
        self._queue: deque[_Item] = deque()
        self._first_at = 0.0  # when the oldest queued image was queued
        self._timer: asyncio.TimerHandle | None = None
        self._pass: asyncio.Task[None] | None = None  # the pass in progress
        self._running = False
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="mixer-forward")  # one model, one pass at a time

    async def start(self) -> None:
        self._running = True

    async def stop(self) -> None:
        """Answer everything queued, then take nothing more."""
        self._running = False
        while self._pass is not None or self._queue:
            if self._pass is None:
                self._kick(force=True)
            if self._pass is not None:
                await asyncio.shield(self._pass)
        self._executor.shutdown()

    @contextmanager
    def arriving(self) -> Iterator[None]:
        """Wrap the reading and decoding of a request: while any is on its way, a batch waits for it."""
        self._arriving += 1
        try:
            yield
        finally:
            self._arriving -= 1
            if self._queue and not self._arriving:
                self._kick()

    async def submit(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Logits (len(images), num_classes) of preprocessed images, computed with whatever else is waiting."""
        if not self._running:
            raise NotRunningError("the model is not running (server starting or stopping)")
        loop = asyncio.get_running_loop()
        items = [_Item(image, loop.create_future()) for image in images]
        if not self._queue:
            self._first_at = loop.time()
        self._queue.extend(items)
        self._kick()
        return torch.stack(await asyncio.gather(*(item.future for item in items)))

    def _kick(self, force: bool = False) -> None:
        """Start a pass with what is queued, unless one is running or the batch should wait for a request on its
        way (then a timer kicks again at the batch's deadline)."""
        if self._pass is not None or not self._queue:
            return
        loop = asyncio.get_running_loop()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self._first_at + self.max_wait
        if not force and self._arriving and len(self._queue) < self.max_batch_size and loop.time() < deadline:
            self._timer = loop.call_at(deadline, self._kick, True)
            return
        batch = []
        while self._queue and len(batch) < self.max_batch_size:
            item = self._queue.popleft()
            if not item.future.done():  # a request cancelled while queued costs nothing
                batch.append(item)
        self._first_at = loop.time()
        if not batch:
            return self._kick()
        start = time.perf_counter()
        images = torch.stack([item.image for item in batch])
        try:
            if hasattr(self.forward, "begin"):
                pending = self.forward.begin(images)  # the pass starts now, in this call
            else:
                pending = loop.run_in_executor(self._executor, self.forward, images)
        except Exception as err:
            pending = loop.create_future()
            pending.set_exception(err)
        self._pass = asyncio.ensure_future(self._finish(batch, pending, start))

    async def _finish(self, batch: list[_Item], pending: Awaitable[torch.Tensor], start: float) -> None:
        try:
            logits = await pending
        except Exception as err:  # a failed pass fails its requests (500, or 503 for a lost worker), not the batcher
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(err)
        else:
            self.batches += 1
            if self.on_batch is not None:
                self.on_batch(len(batch), time.perf_counter() - start)
            for item, row in zip(batch, logits, strict=True):
                if not item.future.done():  # a client that went away cancelled its future
                    item.future.set_result(row)
        finally:
            self._pass = None
        self._kick()  # what arrived during this pass
