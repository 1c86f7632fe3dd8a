"""Noticing a client that has gone while its request waits, so its work is not done for nobody.

Once a request's body has been read, the next ASGI ``receive()`` only returns when the
client disconnects (or the response is complete). `cancel_on_disconnect` runs the
request's work alongside a watcher on that ``receive()``: if the client goes first, the
work is cancelled — an image still queued for the batcher is dropped before inference
(`service.batching` skips cancelled entries), a stage already running in a thread
finishes first — and `ClientDisconnectedError` is raised, which the error handlers log
in one line and count as ``scene_errors_total{reason="client_disconnected"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

from starlette.types import Receive

from service.errors import ClientDisconnectedError

T = TypeVar("T")


async def wait_for_disconnect(receive: Receive) -> None:
    """Return when ``receive`` reports ``http.disconnect``; call it only after the body is read."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def cancel_on_disconnect(receive: Receive, work: Coroutine[Any, Any, T]) -> T:
    """``await work``, unless the client disconnects first: then cancel it and raise
    `ClientDisconnectedError`."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(wait_for_disconnect(receive))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        # This request itself was cancelled (server shutdown): neither may outlive it.
        watcher.cancel()
        task.cancel()
        raise
    watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    # A stage running in a thread finishes first; the cancellation lands at its next await.
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    raise ClientDisconnectedError("while its request waited; its work was cancelled")
