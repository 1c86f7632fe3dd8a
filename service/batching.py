"""Dynamic micro-batching: requests that arrive close together share one ONNX Runtime run.

Every request puts its preprocessed image (``uint8 [H, W, 3]`` at the model's input size,
so images stack) on a bounded asyncio queue and awaits a future. One batcher task waits
for one of ``streams`` inference threads to be free, then takes the first waiting image,
keeps collecting for up to ``window_s`` or until ``max_batch_size``, and runs the stacked
batch in that thread, so the event loop never blocks on inference. With one stream (a
GPU) ORT is never entered by two batches at once and requests that arrive during a run
form the next batch; on a CPU, where batching does not pay, a stream per core runs
single images side by side, each on its own core (`service.runtime` sizes the threads).

The window is held open only while another request is known to be on its way: the
pipeline marks each request with `MicroBatcher.incoming` while it decodes and
preprocesses. A lone request therefore runs at once instead of paying the window
(at low load batching can only add latency), while a burst of concurrent requests
still meets in one batch; requests that arrive while a batch runs queue up and form
the next one.

Back-pressure and cancellation:

- a full queue raises `QueueFullError` at once (503 with ``Retry-After``) instead of letting
  latency grow without bound;
- a request that times out cancels its future; the batcher drops cancelled entries
  when it dequeues them and never sets a result on them, so nothing waits forever and
  no result is kept for nobody (a client that disconnects while its image waits is
  cancelled the same way, by `service.disconnect`);
- `stop` fails every queued request, and a batch still being collected, with
  `ShuttingDownError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from service import metrics
from service.errors import (
    InferenceFailedError,
    InferenceTimeoutError,
    QueueFullError,
    ServiceError,
    ShuttingDownError,
)
from service.runtime import Outputs

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 1


@dataclass(frozen=True)
class InferenceResult:
    """One image's share of a batch run.

    Attributes:
        outputs: the contract's outputs without the batch axis: ``semantic`` uint8 [H, W],
            ``semantic_confidence`` float32 [H, W], ``instance_offsets`` float32 [2, H, W],
            ``inverse_depth`` float32 [1, H, W].
        queue_wait_s: seconds from enqueueing to the start of its batch's run.
        inference_s: seconds the batch's ORT run took.
        batch_size: images in that run.
    """

    outputs: Outputs
    queue_wait_s: float
    inference_s: float
    batch_size: int


@dataclass(frozen=True)
class _Pending:
    image: npt.NDArray[np.uint8]
    future: asyncio.Future[InferenceResult]
    enqueued_at: float


class MicroBatcher:
    """Collects single images into batches for ``run_batch`` (``uint8 [N, H, W, 3]`` → outputs)."""

    def __init__(
        self,
        run_batch: Callable[[npt.NDArray[np.uint8]], Outputs],
        *,
        window_s: float,
        max_batch_size: int,
        queue_size: int,
        streams: int = 1,
    ) -> None:
        self._run_batch = run_batch
        self._streams = streams
        self._window_s = window_s
        self._max_batch_size = max_batch_size
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=queue_size)
        self._arrived = asyncio.Event()
        self._incoming = 0
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def queued(self) -> int:
        """Requests waiting for a batch (cancelled ones included until dequeued)."""
        return self._queue.qsize()

    @contextlib.contextmanager
    def incoming(self) -> Iterator[None]:
        """Mark a request that will call `infer` soon (while it decodes, say), so an open
        batch waits for it, up to the window. Use it on the event loop only."""
        self._incoming += 1
        try:
            yield
        finally:
            self._incoming -= 1
            self._arrived.set()  # the collector re-checks: the image is queued, or will never come

    def start(self) -> None:
        """Start the batcher task on the running event loop."""
        self._executor = ThreadPoolExecutor(max_workers=self._streams, thread_name_prefix="scene-inference")
        self._task = asyncio.get_running_loop().create_task(self._serve(), name="scene-micro-batcher")

    async def stop(self) -> None:
        """Stop batching and fail whatever is still queued with `ShuttingDownError`."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(ShuttingDownError("the server is shutting down"))
        if self._executor is not None:
            # A run already inside ORT finishes in its thread; nobody waits for it.
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def infer(self, image: npt.NDArray[np.uint8], timeout_s: float) -> InferenceResult:
        """Queue ``image`` (``uint8 [H, W, 3]``) and wait for its outputs.

        Raises `QueueFullError` when the queue is full, `InferenceTimeoutError` after ``timeout_s``
        (queue wait plus inference), `ShuttingDownError` when the batcher stops first.
        """
        if self._closed:
            raise ShuttingDownError("the server is shutting down")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[InferenceResult] = loop.create_future()
        try:
            self._queue.put_nowait(_Pending(image, future, time.perf_counter()))
        except asyncio.QueueFull:
            raise QueueFullError(
                f"{self._queue.maxsize} images are already waiting; retry shortly",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            ) from None
        self._arrived.set()
        try:
            # On timeout (or when this request is cancelled) wait_for cancels the future,
            # which is how the batcher knows to skip it.
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise InferenceTimeoutError(f"no result within {timeout_s:g} s; server overloaded") from None

    async def _serve(self) -> None:
        free = asyncio.Semaphore(self._streams)
        running: set[asyncio.Task[None]] = set()

        def finished(task: asyncio.Task[None]) -> None:
            running.discard(task)
            free.release()

        try:
            while True:
                # A batch is collected only once a stream can run it: until then requests
                # queue up, and on a single stream they meet in the next batch.
                await free.acquire()
                batch: list[_Pending] = []
                try:
                    await self._collect(batch)
                except asyncio.CancelledError:
                    _fail(batch, ShuttingDownError("the server is shutting down"))
                    raise
                task = asyncio.get_running_loop().create_task(self._run(batch))
                running.add(task)
                task.add_done_callback(finished)
        finally:
            for task in list(running):
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _collect(self, batch: list[_Pending]) -> None:
        """Wait for a live request, then gather more into ``batch`` for up to the window
        while more are coming."""
        loop = asyncio.get_running_loop()
        while not batch:
            pending = await self._queue.get()
            if not pending.future.done():
                batch.append(pending)
        deadline = loop.time() + self._window_s
        while len(batch) < self._max_batch_size:
            if self._queue.empty():
                remaining = deadline - loop.time()
                if remaining <= 0 or self._incoming == 0:
                    break  # window over, or nobody else on the way: waiting would only add latency
                # An event rather than wait_for(queue.get()): on Python 3.11 the latter
                # can drop an item that arrives just as the timeout fires.
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
                continue
            pending = self._queue.get_nowait()
            if not pending.future.done():
                batch.append(pending)

    async def _run(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        # perf_counter, not loop.time(): uvloop's clock ticks in whole milliseconds.
        started = time.perf_counter()
        try:
            images = np.stack([pending.image for pending in batch])
            outputs = await loop.run_in_executor(self._executor, self._run_batch, images)
        except asyncio.CancelledError:
            _fail(batch, ShuttingDownError("the server is shutting down"))
            raise
        except Exception:
            logger.exception("inference failed for a batch of %d", len(batch))
            _fail(batch, InferenceFailedError("the model failed on this batch; see the server log"))
            return
        inference_s = time.perf_counter() - started
        metrics.BATCH_SIZE.observe(len(batch))
        for index, pending in enumerate(batch):
            if not pending.future.done():
                result = InferenceResult(
                    outputs={name: values[index] for name, values in outputs.items()},
                    queue_wait_s=started - pending.enqueued_at,
                    inference_s=inference_s,
                    batch_size=len(batch),
                )
                pending.future.set_result(result)


def _fail(batch: list[_Pending], error: ServiceError) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(error)
