"""What the micro-batcher's window costs: queue wait of a lone request, and of one that waits for another.

    python -m bench.batcher_wait [--runs 50] [--smoke]

With a model that returns at once, so only the batcher is timed. A lone request
should run at once whatever the window (it waits only for requests known to be on
their way); a request whose batch waits for another one still being decoded (200 ms
of decoding here) should wait about that long, never the whole window. Medians of
``runs`` requests, on the event loop of this process.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics

import numpy as np
import numpy.typing as npt

from service.batching import MicroBatcher
from service.runtime import Outputs

DECODE_S = 0.2


def echo(images: npt.NDArray[np.uint8]) -> Outputs:
    return {"semantic": images[:, 0, 0, 0].copy()}


async def lone_waits(window_s: float, runs: int) -> list[float]:
    micro = MicroBatcher(echo, window_s=window_s, max_batch_size=8, queue_size=8)
    micro.start()
    try:
        image = np.zeros((2, 2, 3), dtype=np.uint8)
        return [(await micro.infer(image, timeout_s=30)).queue_wait_s for _ in range(runs)]
    finally:
        await micro.stop()


async def waits_behind_a_slow_request(window_s: float, runs: int) -> list[float]:
    micro = MicroBatcher(echo, window_s=window_s, max_batch_size=8, queue_size=8)
    micro.start()
    image = np.zeros((2, 2, 3), dtype=np.uint8)

    async def slow() -> None:
        with micro.incoming():
            await asyncio.sleep(DECODE_S)
        await micro.infer(image, timeout_s=30)

    waits = []
    try:
        for _ in range(runs):
            other = asyncio.create_task(slow())
            await asyncio.sleep(0)
            waits.append((await micro.infer(image, timeout_s=30)).queue_wait_s)
            await other
    finally:
        await micro.stop()
    return waits


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--smoke", action="store_true", help="a few runs, to check the script works")
    args = parser.parse_args(argv)
    runs = 3 if args.smoke else args.runs
    for window_s in (0.003, 5.0):
        lone = statistics.median(asyncio.run(lone_waits(window_s, runs)))
        print(
            f"window {window_s * 1000:6.0f} ms: lone request waits {lone * 1000:8.3f} ms (median of {runs})"
        )
    behind = statistics.median(asyncio.run(waits_behind_a_slow_request(5.0, min(runs, 10))))
    print(
        f"window   5000 ms: request whose batch waits for one still decoding ({DECODE_S * 1000:.0f} ms) "
        f"waits {behind * 1000:8.3f} ms"
    )


if __name__ == "__main__":
    main()
