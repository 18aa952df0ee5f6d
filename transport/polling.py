"""How a poll loop waits: short naps right after activity, then millisecond ticks.

NIXL without a progress thread only moves when polled. asyncio cannot sleep less
than about a millisecond (epoll's timeout resolution rounds 50 us up to 1 ms),
and spinning with `sleep(0)` starves the peer process on a small host (on two
cores, a spinning consumer slowed 1 MiB reads tenfold). So right after activity,
when work is likely (a consumer reads right after the producer exposes; a
consumer's own progress calls do the copying), a loop yields to other tasks and
then naps 50 us in the kernel: the event loop is held for 50 us at a time. After
the window it ticks, from once a millisecond up to every 10 ms as the quiet
stretch grows: a readable nobody pulls costs about 1% of a core, not 8%.
"""

import asyncio
import time

ACTIVE_WINDOW_S = 2e-3
NAP_S = 50e-6
MIN_TICK_S = 1e-3
MAX_TICK_S = 10e-3
# A transfer should take at most this long per byte; the window covers it.
PESSIMISTIC_S_PER_BYTE = 1 / 1e9


async def pause(since_activity_s: float, nbytes_in_flight: int = 0) -> None:
    quiet_s = since_activity_s - ACTIVE_WINDOW_S - nbytes_in_flight * PESSIMISTIC_S_PER_BYTE
    if quiet_s < 0:
        await asyncio.sleep(0)
        time.sleep(NAP_S)
    else:
        await asyncio.sleep(min(MAX_TICK_S, max(MIN_TICK_S, quiet_s / 10)))
