"""The micro-batcher on its own: batches split at the batch size, rows in order, no wait for a lone request, and
nothing taken while it is not running (the server answers that 503)."""

import asyncio
import time

import pytest
import torch

from mlp_mixer.inference.batching import MicroBatcher, NotRunningError


def test_micro_batcher_splits_at_the_batch_size_and_keeps_rows_in_order():
    sizes = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        sizes.append(len(x))
        return x.flatten(1) * 2

    async def main() -> list[torch.Tensor]:
        batcher = MicroBatcher(forward, max_batch_size=4, max_wait_ms=50)
        await batcher.start()
        rows = await asyncio.gather(*(batcher.submit([torch.full((1, 2), float(i))]) for i in range(10)))
        await batcher.stop()
        return rows

    rows = asyncio.run(main())
    # The first goes alone: the model was idle and nothing was arriving (so no 50 ms wait); the rest queue during
    # its pass and go four at a time, the last one at once.
    assert sizes == [1, 4, 4, 1]
    for i, row in enumerate(rows):
        torch.testing.assert_close(row, torch.full((1, 2), 2.0 * i))


def test_a_lone_request_does_not_wait_for_company():
    async def main() -> float:
        batcher = MicroBatcher(lambda x: x.flatten(1), max_batch_size=32, max_wait_ms=10_000)
        await batcher.start()
        start = time.perf_counter()
        with batcher.arriving():
            pass  # read and decoded; nothing else is on its way
        await batcher.submit([torch.ones(1, 2)])
        seconds = time.perf_counter() - start
        await batcher.stop()
        return seconds

    assert asyncio.run(main()) < 5  # not the 10 s batch wait


def test_nothing_is_taken_before_start_or_after_stop():
    async def main() -> None:
        batcher = MicroBatcher(lambda x: x.flatten(1))
        with pytest.raises(NotRunningError, match="not running"):
            await batcher.submit([torch.ones(1, 2)])
        await batcher.start()
        await batcher.submit([torch.ones(1, 2)])
        await batcher.stop()
        with pytest.raises(NotRunningError, match="server starting or stopping"):
            await batcher.submit([torch.ones(1, 2)])

    asyncio.run(main())
