"""The micro-batcher: batching, routing results, back-pressure, timeouts, failures."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from service.batching import MicroBatcher
from service.errors import InferenceFailedError, InferenceTimeoutError, QueueFullError, ShuttingDownError
from service.runtime import Outputs

pytestmark = pytest.mark.anyio


def image(value: int) -> npt.NDArray[np.uint8]:
    """``uint8 [2, 2, 3]`` filled with ``value``, so a result can be traced to its request."""
    return np.full((2, 2, 3), value, dtype=np.uint8)


class FakeModel:
    """Records batch sizes; echoes each image's first pixel as its ``semantic`` output.

    With ``gate`` set, every run first waits for the gate (from the inference thread).
    """

    def __init__(self, gate: threading.Event | None = None, fail: bool = False) -> None:
        self.batch_sizes: list[int] = []
        self.seen: list[int] = []
        self.gate = gate
        self.fail = fail
        self.started = threading.Event()

    def __call__(self, images: npt.NDArray[np.uint8]) -> Outputs:
        self.started.set()
        if self.gate is not None:
            self.gate.wait(timeout=10)
        if self.fail:
            raise RuntimeError("boom")
        self.batch_sizes.append(len(images))
        self.seen.extend(int(v) for v in images[:, 0, 0, 0])
        return {"semantic": images[:, 0, 0, 0].copy()}


def batcher(model: Callable[[npt.NDArray[np.uint8]], Outputs], **options: float) -> MicroBatcher:
    values = {"window_s": 0.05, "max_batch_size": 4, "queue_size": 16} | options
    return MicroBatcher(
        model,
        window_s=float(values["window_s"]),
        max_batch_size=int(values["max_batch_size"]),
        queue_size=int(values["queue_size"]),
    )


async def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.001)


async def test_requests_within_the_window_share_one_run_and_get_their_own_result() -> None:
    model = FakeModel()
    micro = batcher(model, max_batch_size=8)
    micro.start()
    try:
        results = await asyncio.gather(*(micro.infer(image(v), timeout_s=5) for v in range(6)))
    finally:
        await micro.stop()
    assert model.batch_sizes == [6]
    assert [int(r.outputs["semantic"]) for r in results] == list(range(6))
    assert all(r.batch_size == 6 and r.queue_wait_s >= 0 and r.inference_s >= 0 for r in results)


async def test_a_lone_request_does_not_wait_out_the_window() -> None:
    model = FakeModel()
    micro = batcher(model, window_s=3600.0)  # waiting it out would time the request out
    micro.start()
    try:
        result = await micro.infer(image(1), timeout_s=10)
    finally:
        await micro.stop()
    assert result.batch_size == 1 and model.batch_sizes == [1]


async def test_the_window_waits_for_a_request_still_on_its_way() -> None:
    model = FakeModel()
    micro = batcher(model, window_s=5.0)
    micro.start()

    async def slow_request() -> int:
        with micro.incoming():
            await asyncio.sleep(0.2)  # decoding a large image, say
        return int((await micro.infer(image(2), timeout_s=10)).batch_size)

    async def abandoned_request() -> None:
        with micro.incoming():
            await asyncio.sleep(0.3)  # its image turns out corrupt: it never reaches infer

    try:
        slow = asyncio.create_task(slow_request())
        abandoned = asyncio.create_task(abandoned_request())
        await asyncio.sleep(0.01)
        first = await micro.infer(image(1), timeout_s=10)
        await abandoned
        assert await slow == 2
    finally:
        await micro.stop()
    # The open batch waited for the slow request, then ran once the abandoned one gave up.
    assert model.batch_sizes == [2] and first.batch_size == 2


async def test_each_stream_runs_its_own_batch_at_the_same_time() -> None:
    both_inside = threading.Barrier(2, timeout=5)

    def model(images: npt.NDArray[np.uint8]) -> Outputs:
        both_inside.wait()  # breaks (the run fails) unless the other stream's run is inside too
        return {"semantic": images[:, 0, 0, 0].copy()}

    micro = MicroBatcher(model, window_s=0.0, max_batch_size=1, queue_size=4, streams=2)
    micro.start()
    try:
        results = await asyncio.gather(*(micro.infer(image(v), timeout_s=10) for v in (1, 2)))
    finally:
        await micro.stop()
    assert [int(r.outputs["semantic"]) for r in results] == [1, 2]
    assert [r.batch_size for r in results] == [1, 1]


async def test_batches_never_exceed_max_batch_size() -> None:
    model = FakeModel()
    micro = batcher(model, max_batch_size=4)
    micro.start()
    try:
        await asyncio.gather(*(micro.infer(image(v), timeout_s=5) for v in range(10)))
    finally:
        await micro.stop()
    assert sum(model.batch_sizes) == 10
    assert max(model.batch_sizes) == 4


async def test_a_full_queue_refuses_at_once_with_retry_after() -> None:
    gate = threading.Event()
    model = FakeModel(gate)
    micro = batcher(model, window_s=0.0, max_batch_size=1, queue_size=1)
    micro.start()
    try:
        running = asyncio.create_task(micro.infer(image(1), timeout_s=5))
        await wait_for(model.started.is_set)  # the first request is inside the model
        waiting = asyncio.create_task(micro.infer(image(2), timeout_s=5))
        await wait_for(lambda: micro.queued == 1)
        with pytest.raises(QueueFullError) as refused:
            await micro.infer(image(3), timeout_s=5)
        assert refused.value.headers["Retry-After"] == "1"
        gate.set()
        assert [int(r.outputs["semantic"]) for r in await asyncio.gather(running, waiting)] == [1, 2]
    finally:
        gate.set()
        await micro.stop()


async def test_a_timed_out_request_is_dropped_and_nothing_leaks() -> None:
    gate = threading.Event()
    model = FakeModel(gate)
    micro = batcher(model, window_s=0.0, max_batch_size=1)
    micro.start()
    try:
        running = asyncio.create_task(micro.infer(image(1), timeout_s=5))
        await wait_for(model.started.is_set)
        with pytest.raises(InferenceTimeoutError):
            await micro.infer(image(2), timeout_s=0.05)  # stuck behind the first
        gate.set()
        await running
        after = await micro.infer(image(3), timeout_s=5)
    finally:
        gate.set()
        await micro.stop()
    assert int(after.outputs["semantic"]) == 3
    assert 2 not in model.seen, "the timed-out image still reached the model"
    assert micro.queued == 0


async def test_a_failing_run_fails_its_requests_and_batching_goes_on() -> None:
    model = FakeModel(fail=True)
    micro = batcher(model)
    micro.start()
    try:
        outcomes = await asyncio.gather(
            *(micro.infer(image(v), timeout_s=5) for v in range(3)), return_exceptions=True
        )
        assert all(isinstance(o, InferenceFailedError) for o in outcomes)
        model.fail = False
        assert int((await micro.infer(image(7), timeout_s=5)).outputs["semantic"]) == 7
    finally:
        await micro.stop()


async def test_stop_fails_queued_requests_and_refuses_new_ones() -> None:
    gate = threading.Event()
    model = FakeModel(gate)
    micro = batcher(model, window_s=0.0, max_batch_size=1)
    micro.start()
    running = asyncio.create_task(micro.infer(image(1), timeout_s=5))
    await wait_for(model.started.is_set)
    queued = asyncio.create_task(micro.infer(image(2), timeout_s=5))
    await wait_for(lambda: micro.queued == 1)
    await micro.stop()
    gate.set()
    for task in (running, queued):
        with pytest.raises(ShuttingDownError):
            await task
    with pytest.raises(ShuttingDownError):
        await micro.infer(image(3), timeout_s=5)


async def test_stop_during_the_window_fails_the_batch_being_collected() -> None:
    micro = batcher(FakeModel(), window_s=10.0)
    micro.start()
    with micro.incoming():  # another request on its way holds the window open
        collected = asyncio.create_task(micro.infer(image(1), timeout_s=30))
        await wait_for(lambda: micro.queued == 0)
        await asyncio.sleep(0.05)
        await micro.stop()
        with pytest.raises(ShuttingDownError):
            async with asyncio.timeout(5):
                await collected
