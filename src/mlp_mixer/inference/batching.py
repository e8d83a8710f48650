"""Dynamic batching: the images of concurrent requests gathered into one forward pass each.

The ``max_batch_size`` and batch timeout of Ray Serve and LitServe, for one model in one process: see
:class:`MicroBatcher`. It knows nothing of HTTP; :mod:`.serve` puts it behind the routes.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

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

    One worker task takes the first waiting image, then more until ``max_batch_size`` or ``max_wait_ms`` after
    the first, and runs ``forward`` off the event loop (in a thread of its own, or awaiting a worker process), so
    the loop keeps accepting and decoding requests meanwhile; whatever arrives during a forward pass makes the next
    batch. Each image's future gets its own row. A batch waits only while a request is on its way (inside
    :meth:`arriving`): a lone client pays no wait.

    Args:
        forward: float images (B, C, H, W) -> float32 logits (B, num_classes) on the CPU; a plain function runs in
            a thread of its own, a coroutine function (:meth:`.worker.ModelWorker.forward`) on the event loop.
        max_batch_size: images per forward pass; 1 turns batching off.
        max_wait_ms: how long the first image of a batch waits for company; 0 takes only what is already queued.
        on_batch: called with ``(batch_size, seconds)`` after each forward pass (metrics).
    """

    def __init__(
        self,
        forward: Callable[[torch.Tensor], torch.Tensor],
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
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="mixer-forward")  # one model, one pass at a time
        self._worker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Answer everything queued, then stop the worker."""
        if self._worker is not None:
            await self._queue.put(None)
            await self._worker
            self._worker = None
        self._executor.shutdown()

    @contextmanager
    def arriving(self) -> Iterator[None]:
        """Wrap the reading and decoding of a request: while any is on its way, a batch waits for it."""
        self._arriving += 1
        try:
            yield
        finally:
            self._arriving -= 1

    async def submit(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Logits (len(images), num_classes) of preprocessed images, computed with whatever else is waiting."""
        if self._worker is None or self._worker.done():
            raise NotRunningError("the model is not running (server starting or stopping)")
        loop = asyncio.get_running_loop()
        items = [_Item(image, loop.create_future()) for image in images]
        for item in items:
            self._queue.put_nowait(item)
        return torch.stack(await asyncio.gather(*(item.future for item in items)))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch, deadline = [first], loop.time() + self.max_wait
            while len(batch) < self.max_batch_size and (self._arriving or not self._queue.empty()):
                timeout = deadline - loop.time()
                try:
                    item = (
                        await asyncio.wait_for(self._queue.get(), timeout) if timeout > 0 else self._queue.get_nowait()
                    )
                except (TimeoutError, asyncio.QueueEmpty):
                    break
                if item is None:  # stop() was called: finish this batch, then exit
                    stopping = True
                    break
                batch.append(item)
            await self._forward(loop, batch)

    async def _forward(self, loop: asyncio.AbstractEventLoop, batch: list[_Item]) -> None:
        batch = [item for item in batch if not item.future.done()]  # a request cancelled while queued costs nothing
        if not batch:
            return
        start = time.perf_counter()
        images = torch.stack([i.image for i in batch])
        try:
            if inspect.iscoroutinefunction(self.forward):
                logits = await self.forward(images)
            else:
                logits = await loop.run_in_executor(self._executor, self.forward, images)
        except Exception as err:  # a failed pass fails its requests (500), not the worker
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(err)
            return
        self.batches += 1
        if self.on_batch is not None:
            self.on_batch(len(batch), time.perf_counter() - start)
        for item, row in zip(batch, logits, strict=True):
            if not item.future.done():  # a client that went away cancelled its future
                item.future.set_result(row)
