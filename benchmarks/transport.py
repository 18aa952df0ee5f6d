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

NIXL runs twice: on ordinary buffers (4 KiB pages), and on buffers advised to
use 2 MiB transparent huge pages on both sides, which is what worker processes
get for their large tensors when started with PyTorch's THP_MEM_ALLOC_ENABLE=1:
same-host reads go through UCX's cma transport, which pins every page it copies,
so bigger pages make reads several times faster. It is not the default: on a
host whose memory is fragmented, every advised allocation compacts memory
first, and on a 2-core test host that stalled whole graphs for tens of seconds.
Prints a table and writes JSON (with the commit, date, load and command).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import mmap
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
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


def huge_page_buffer(nbytes: int) -> torch.Tensor:
    """A zeroed uint8 tensor on memory advised to use transparent huge pages."""
    memory = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    memory.madvise(mmap.MADV_HUGEPAGE)
    tensor = torch.frombuffer(memory, dtype=torch.uint8)
    tensor.zero_()  # fault the pages in now, as huge ones
    return tensor


def buffer(nbytes: int, huge: bool) -> torch.Tensor:
    return huge_page_buffer(nbytes) if huge else torch.empty(nbytes, dtype=torch.uint8)


def producer_main(backend: str, huge: bool, pipe: Connection) -> None:
    asyncio.run(_produce(backend, huge, pipe))


async def _produce(backend: str, huge: bool, pipe: Connection) -> None:
    """Answers (size, count) with `count` readables of a tensor of that size; None ends it."""
    connector = Connector(backend)
    pipe.send(connector.backend)
    tensors = {n: buffer(n, huge).random_(0, 256) for n in SIZES}
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
    def __init__(self, backend: str, huge: bool) -> None:
        self.pipe, child_pipe = mp.Pipe()
        self.process = mp.get_context("spawn").Process(
            target=producer_main, args=(backend, huge, child_pipe), daemon=True
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


async def pull_gbps(producer: Producer, connector: Connector, size: int, huge: bool) -> float:
    dst = Descriptor(buffer(size, huge))
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


async def measure_backend(
    backend: str, huge: bool = False
) -> tuple[dict[int, float], dict[str, Any]]:
    producer = Producer(backend, huge)
    connector = Connector(backend)
    try:
        gbps = {size: await pull_gbps(producer, connector, size, huge) for size in SIZES}
        extra: dict[str, Any] = {}
        if backend == "nixl" and not huge:
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
    huge, huge_extra = await measure_backend("nixl", huge=True)
    tcp, tcp_extra = await measure_backend("tcp")
    rows = []
    for size in SIZES:
        memcpy = memcpy_gbps(size)
        rows.append(
            {
                "bytes": size,
                "memcpy_gbps": round(memcpy, 3),
                "nixl_gbps": round(nixl[size], 3),
                "nixl_huge_pages_gbps": round(huge[size], 3),
                "tcp_gbps": round(tcp[size], 3),
                "nixl_over_memcpy": round(nixl[size] / memcpy, 3),
                "nixl_huge_over_memcpy": round(huge[size] / memcpy, 3),
                "nixl_huge_over_tcp": round(huge[size] / tcp[size], 3),
            }
        )
    by_size = {r["bytes"]: r for r in rows}
    goals = {
        "nixl (huge pages) >= 0.6x memcpy at 16 MiB": by_size[16 << 20]["nixl_huge_over_memcpy"]
        >= 0.6,
        "nixl (huge pages) >= 0.8x memcpy at 256 MiB": by_size[256 << 20]["nixl_huge_over_memcpy"]
        >= 0.8,
        "nixl (huge pages) >= 3x tcp at >= 1 MiB": all(
            r["nixl_huge_over_tcp"] >= 3 for r in rows if r["bytes"] >= 1 << 20
        ),
    }
    return {
        "commit": _git("rev-parse", "--short", "HEAD"),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_1m": os.getloadavg()[0],
        "command": "python -m benchmarks.transport " + " ".join(sys.argv[1:]),
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
        "nixl_huge_pages": huge_extra,
        "tcp": tcp_extra,
    }


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True).stdout.strip()


def print_table(result: dict[str, Any]) -> None:
    print(
        f"{'size':>9} {'memcpy GB/s':>12} {'NIXL GB/s':>10} {'NIXL huge':>10} {'tcp GB/s':>9} "
        f"{'huge/memcpy':>12} {'huge/tcp':>9}"
    )
    for r in result["rows"]:
        print(
            f"{_size(r['bytes']):>9} {r['memcpy_gbps']:>12.2f} {r['nixl_gbps']:>10.2f} "
            f"{r['nixl_huge_pages_gbps']:>10.2f} {r['tcp_gbps']:>9.2f} "
            f"{r['nixl_huge_over_memcpy']:>12.2f} {r['nixl_huge_over_tcp']:>9.2f}"
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
