"""Data-plane throughput: NIXL READ and the tcp fallback, next to an in-process memcpy.

    python -m benchmarks.transport [--out benchmarks/results/transport.json]

For each size from 64 KiB to 256 MiB, a producer process exposes one tensor
(a fresh readable per read, the registration cached as in production) and this
process pulls it with `read_into` a preallocated buffer, as the decode worker
fills its KV pool. The same is done with a tcp-fallback producer, and
`dst.copy_(src)` inside one process gives the memcpy yardstick. Reported GB/s
are medians over the repetitions; memcpy runs on one thread, as one transfer
does. Afterwards the NIXL producer, agent still alive, sits idle for a few
seconds and its CPU use is sampled from /proc.
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import statistics
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch

from transport import Connector, Descriptor, RdmaMetadata

RESULTS = Path(__file__).parent / "results" / "transport.json"
SIZES = [64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20, 256 << 20]
IDLE_SAMPLE_S = 5.0


def repetitions(nbytes: int) -> int:
    return max(5, min(50, (1 << 30) // nbytes))


# --- the producer process -----------------------------------------------------------------


def producer_main(backend: str, pipe: Connection) -> None:
    asyncio.run(_produce(backend, pipe))


async def _produce(backend: str, pipe: Connection) -> None:
    """Answers (size, count) with `count` readables of a tensor of that size; None ends it."""
    connector = Connector(backend)
    pipe.send(connector.backend)
    tensors = {n: torch.randint(0, 256, (n,), dtype=torch.uint8) for n in SIZES}
    while (request := await recv(pipe)) is not None:
        size, count = request
        ops = [await connector.create_readable([Descriptor(tensors[size])]) for _ in range(count)]
        pipe.send([op.metadata.to_dict() for op in ops])
    pipe.send(connector.stats())


async def recv(pipe: Connection) -> Any:
    """Waits for the pipe on the event loop, so no thread contends with its poll loop."""
    loop = asyncio.get_running_loop()
    while not pipe.poll():
        readable = loop.create_future()
        loop.add_reader(pipe.fileno(), readable.set_result, None)
        try:
            await readable
        finally:
            loop.remove_reader(pipe.fileno())
    return pipe.recv()


class Producer:
    def __init__(self, backend: str) -> None:
        self.pipe, child_pipe = mp.Pipe()
        self.process = mp.get_context("spawn").Process(
            target=producer_main, args=(backend, child_pipe), daemon=True
        )
        self.process.start()
        self.backend = self.pipe.recv()
        if self.backend != backend:
            raise RuntimeError(f"asked for a {backend} producer, got {self.backend}")

    async def readables(self, size: int, count: int) -> list[RdmaMetadata]:
        self.pipe.send((size, count))
        metas = await recv(self.pipe)
        return [RdmaMetadata.from_dict(m) for m in metas]

    def idle_cpu_percent(self, seconds: float) -> float:
        """CPU use of the producer while it holds an agent and does nothing."""
        before = _cpu_ticks(self.process.pid)
        time.sleep(seconds)
        return 100.0 * (_cpu_ticks(self.process.pid) - before) / os.sysconf("SC_CLK_TCK") / seconds

    def stop(self) -> dict[str, Any]:
        self.pipe.send(None)
        stats = self.pipe.recv()
        self.process.join(timeout=10)
        return stats


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


# --- measurements -------------------------------------------------------------------------


async def pull_gbps(producer: Producer, connector: Connector, size: int) -> float:
    dst = Descriptor(torch.empty(size, dtype=torch.uint8))
    seconds = []
    for _ in range(repetitions(size) + 1):
        (meta,) = await producer.readables(size, 1)  # as a request-plane reply would bring it
        started = time.perf_counter()
        await connector.read_into(meta, [dst])
        seconds.append(time.perf_counter() - started)
    return size / statistics.median(seconds[1:]) / 1e9  # the first read warms up


def memcpy_gbps(size: int) -> float:
    """One thread, like one NIXL stream: torch's threaded copy_ is erratic on busy small hosts."""
    torch.set_num_threads(1)
    src = torch.randint(0, 256, (size,), dtype=torch.uint8)
    dst = torch.empty_like(src)
    dst.copy_(src)
    seconds = []
    for _ in range(repetitions(size)):
        started = time.perf_counter()
        dst.copy_(src)
        seconds.append(time.perf_counter() - started)
    return size / statistics.median(seconds) / 1e9


async def measure_backend(backend: str) -> tuple[dict[int, float], dict[str, Any]]:
    producer = Producer(backend)
    connector = Connector(backend)
    try:
        gbps = {size: await pull_gbps(producer, connector, size) for size in SIZES}
        extra: dict[str, Any] = {}
        if backend == "nixl":
            extra["producer_idle_cpu_percent"] = producer.idle_cpu_percent(IDLE_SAMPLE_S)
        extra["producer_stats"] = producer.stop()
        extra["consumer_stats"] = connector.stats()
        return gbps, extra
    finally:
        connector.close()
        if producer.process.is_alive():
            producer.process.kill()


async def run() -> dict[str, Any]:
    nixl, nixl_extra = await measure_backend("nixl")
    tcp, tcp_extra = await measure_backend("tcp")
    rows = []
    for size in SIZES:
        memcpy = memcpy_gbps(size)
        rows.append(
            {
                "bytes": size,
                "memcpy_gbps": round(memcpy, 3),
                "nixl_gbps": round(nixl[size], 3),
                "tcp_gbps": round(tcp[size], 3),
                "nixl_over_memcpy": round(nixl[size] / memcpy, 3),
                "nixl_over_tcp": round(nixl[size] / tcp[size], 3),
            }
        )
    goals = {
        "nixl >= 0.5x memcpy at >= 16 MiB": all(
            r["nixl_over_memcpy"] >= 0.5 for r in rows if r["bytes"] >= 16 << 20
        ),
        "nixl >= 3x tcp at >= 1 MiB": all(
            r["nixl_over_tcp"] >= 3 for r in rows if r["bytes"] >= 1 << 20
        ),
    }
    return {
        "host": {
            "cpus": os.cpu_count(),
            "memcpy_threads": 1,
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "method": "median of repetitions; read_into a preallocated host buffer; "
        "producer in a separate process; first read per size discarded",
        "rows": rows,
        "goals": goals,
        "nixl": nixl_extra,
        "tcp": tcp_extra,
    }


def print_table(result: dict[str, Any]) -> None:
    print(
        f"{'size':>9} {'memcpy GB/s':>12} {'NIXL GB/s':>10} {'tcp GB/s':>9} "
        f"{'NIXL/memcpy':>12} {'NIXL/tcp':>9}"
    )
    for r in result["rows"]:
        print(
            f"{_size(r['bytes']):>9} {r['memcpy_gbps']:>12.2f} {r['nixl_gbps']:>10.2f} "
            f"{r['tcp_gbps']:>9.2f} {r['nixl_over_memcpy']:>12.2f} {r['nixl_over_tcp']:>9.2f}"
        )
    for goal, met in result["goals"].items():
        print(f"goal {goal}: {'met' if met else 'NOT met'}")
    print(f"idle NIXL producer CPU: {result['nixl']['producer_idle_cpu_percent']:.1f}%")


def _size(nbytes: int) -> str:
    return f"{nbytes >> 20} MiB" if nbytes >= 1 << 20 else f"{nbytes >> 10} KiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = asyncio.run(run())
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
