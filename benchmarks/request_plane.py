"""Request-plane latency and streaming throughput on loopback, next to plain asyncio TCP.

    python -m benchmarks.request_plane [--requests 2000] [--stream 50000]

Starts an etcd and one echo worker process (`python -m runtime.worker`, as in
production), measures from this process:

- round trip of a one-reply request, sequentially (p50/p99),
- replies per second of one request streaming many small replies,
- requests per second with 64 requests in flight,

and the same three against a plain asyncio TCP echo server in its own process
(length-prefixed msgpack frames, no discovery, no routing, no cancellation):
the floor our runtime's overhead is measured against. Prints a table and
writes benchmarks/results/request_plane.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from protocol import codec
from runtime import Component, Context, DistributedRuntime, Graph, endpoint
from runtime.etcd_server import EtcdServer
from runtime.ports import free_ports
from runtime.processes import dies_with_parent, stop_process

RESULTS = Path(__file__).parent / "results" / "request_plane.json"
NAMESPACE = "bench"
CONCURRENCY = 64
PAYLOAD = b"x" * 64


class BenchEcho(Component):
    """Replies `count` times with a small payload."""

    @endpoint
    async def echo(self, request: dict, ctx: Context) -> AsyncIterator[bytes]:
        for _ in range(request["count"]):
            yield PAYLOAD


graph = Graph(BenchEcho)


# --- the plain asyncio TCP baseline -------------------------------------------------------

_LENGTH = struct.Struct("!I")


def _write_frame(writer: asyncio.StreamWriter, message: Any) -> None:
    data = codec.encode(message)
    writer.write(_LENGTH.pack(len(data)) + data)


async def _read_frame(reader: asyncio.StreamReader) -> Any:
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    return codec.decode(await reader.readexactly(length))


async def _tcp_echo_server(port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await _read_frame(reader)
                for _ in range(request["count"]):
                    _write_frame(writer, PAYLOAD)
                await writer.drain()
        except asyncio.IncompleteReadError:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


class TcpCaller:
    """One connection per concurrent caller, like a pool would keep."""

    def __init__(self, connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]):
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
        self._idle = asyncio.Queue()
        for connection in connections:
            self._idle.put_nowait(connection)

    async def stream(self, count: int) -> AsyncIterator[Any]:
        reader, writer = await self._idle.get()
        try:
            _write_frame(writer, {"count": count})
            await writer.drain()
            for _ in range(count):
                yield await _read_frame(reader)
        finally:
            self._idle.put_nowait((reader, writer))


# --- measurements ---------------------------------------------------------------------------

Stream = Callable[[int], AsyncIterator[Any]]


async def round_trips(stream: Stream, requests: int) -> dict[str, float]:
    for _ in range(200):  # warm-up: connections, caches
        async for _ in stream(1):
            pass
    latencies = []
    for _ in range(requests):
        began = time.perf_counter()
        async for _ in stream(1):
            pass
        latencies.append(time.perf_counter() - began)
    cuts = statistics.quantiles(latencies, n=100)
    return {"p50_us": cuts[49] * 1e6, "p99_us": cuts[98] * 1e6}


async def streaming(stream: Stream, replies: int) -> float:
    began = time.perf_counter()
    received = 0
    async for _ in stream(replies):
        received += 1
    assert received == replies
    return replies / (time.perf_counter() - began)


async def concurrent(stream: Stream, requests: int) -> float:
    async def one() -> None:
        async for _ in stream(1):
            pass

    async def caller(share: int) -> None:
        for _ in range(share):
            await one()

    began = time.perf_counter()
    await asyncio.gather(*(caller(requests // CONCURRENCY) for _ in range(CONCURRENCY)))
    return (requests // CONCURRENCY * CONCURRENCY) / (time.perf_counter() - began)


async def measure(stream: Stream, requests: int, replies: int) -> dict[str, float]:
    return {
        **(await round_trips(stream, requests)),
        "stream_msgs_per_s": await streaming(stream, replies),
        "concurrent_req_per_s": await concurrent(stream, requests * 2),
    }


async def bench_runtime(etcd: str, requests: int, replies: int) -> dict[str, float]:
    runtime = await DistributedRuntime.connect(etcd, NAMESPACE)
    try:
        client = runtime.client("BenchEcho")
        await client.wait_for_instances(1)

        def stream(count: int) -> AsyncIterator[Any]:
            return client.stream("echo", {"count": count}, deadline_s=120)

        return await measure(stream, requests, replies)
    finally:
        await runtime.close()


async def bench_tcp(port: int, requests: int, replies: int) -> dict[str, float]:
    connections = []
    for _ in range(CONCURRENCY):
        for _attempt in range(100):  # the server process may still be starting
            try:
                connections.append(await asyncio.open_connection("127.0.0.1", port))
                break
            except ConnectionRefusedError:
                await asyncio.sleep(0.05)
    caller = TcpCaller(connections)
    try:
        return await measure(caller.stream, requests, replies)
    finally:
        for _, writer in connections:
            writer.close()


def _run(command: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(dies_with_parent(command), cwd=Path(__file__).parent.parent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="sequential round trips")
    parser.add_argument("--stream", type=int, default=50_000, help="replies in the stream")
    parser.add_argument("--tcp-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tcp_server:
        asyncio.run(_tcp_echo_server(args.tcp_server))
        return

    with EtcdServer() as etcd:
        worker = _run(
            [sys.executable, "-m", "runtime.worker", "benchmarks.request_plane", "BenchEcho"]
            + ["--etcd", etcd.address, "--namespace", NAMESPACE]
        )
        (tcp_port,) = free_ports(1)
        tcp_server = _run(
            [sys.executable, "-m", "benchmarks.request_plane", "--tcp-server", str(tcp_port)]
        )
        try:
            results = {
                "vidgraph request plane (zmq)": asyncio.run(
                    bench_runtime(etcd.address, args.requests, args.stream)
                ),
                "plain asyncio tcp": asyncio.run(bench_tcp(tcp_port, args.requests, args.stream)),
            }
        finally:
            stop_process(worker, grace_s=10)
            stop_process(tcp_server, grace_s=5)
    report(results, args)


def report(results: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    print(f"{'':30} {'p50 µs':>9} {'p99 µs':>9} {'stream msg/s':>13} {'req/s @64':>10}")
    for name, numbers in results.items():
        print(
            f"{name:30} {numbers['p50_us']:9.0f} {numbers['p99_us']:9.0f} "
            f"{numbers['stream_msgs_per_s']:13.0f} {numbers['concurrent_req_per_s']:10.0f}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "command": "python -m benchmarks.request_plane " + " ".join(sys.argv[1:]),
                "parameters": {
                    "sequential_requests": args.requests,
                    "stream_replies": args.stream,
                    "concurrency": CONCURRENCY,
                    "payload_bytes": len(PAYLOAD),
                },
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                    # Shared machines make loopback timings noisy; keep the context.
                    "load_average_1m": os.getloadavg()[0],
                },
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
