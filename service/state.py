"""What one running app holds — settings, model runtime, batcher, pipeline — and its start/stop.

Start-up order and why:

1. load the session and check the contract (in a thread; a bad model path or card
   stops the server with a clear message rather than serving errors);
2. start the micro-batcher;
3. warm up in the background, so liveness answers at once while readiness stays 503
   until the first (slow) runs are done.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field

from prometheus_client import multiprocess

from service.batching import MicroBatcher
from service.metrics import MULTIPROC_ENV
from service.pipeline import Pipeline
from service.runtime import ModelRuntime, batch_plan
from service.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class ServiceState:
    """The app's moving parts; ``runtime`` and friends are None until `start` has run."""

    settings: Settings
    runtime: ModelRuntime | None = None
    batcher: MicroBatcher | None = None
    pipeline: Pipeline | None = None
    warm_up_error: str | None = None
    max_batch_size: int = 1
    _warm_up_task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def ready(self) -> bool:
        return self.runtime is not None and self.runtime.ready and self.pipeline is not None

    async def start(self) -> None:
        """Load the model and start batching; warm-up continues in the background."""
        settings = self.settings
        runtime = await asyncio.to_thread(ModelRuntime.load, settings)
        streams, self.max_batch_size = batch_plan(settings, runtime.provider)
        batcher = MicroBatcher(
            runtime.run,
            window_s=settings.batch_window_ms / 1000,
            max_batch_size=self.max_batch_size,
            queue_size=settings.queue_size,
            streams=streams,
        )
        batcher.start()
        self.runtime, self.batcher = runtime, batcher
        self.pipeline = Pipeline(runtime, batcher, settings)
        self._warm_up_task = asyncio.create_task(self._warm_up(runtime), name="scene-warm-up")

    async def _warm_up(self, runtime: ModelRuntime) -> None:
        try:
            # A full batch too: the first burst of traffic should not be what grows ORT's arenas.
            await asyncio.to_thread(runtime.warm_up, (1, self.max_batch_size))
        except Exception as error:
            logger.exception("warm-up failed; the service will stay unready")
            self.warm_up_error = f"warm-up failed: {error}"

    async def stop(self) -> None:
        """Stop batching (queued requests get 503) and forget this worker's live gauges."""
        if self._warm_up_task is not None:
            self._warm_up_task.cancel()
        if self.batcher is not None:
            await self.batcher.stop()
        if os.environ.get(MULTIPROC_ENV):
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
