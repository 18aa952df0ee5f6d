"""Embedding and KV-cache transfer over NIXL across simulated hosts vs within one.

    python -m benchmarks.cross_host [--repeats 20] [--out benchmarks/results/cross_host.json]

Needs root and iproute2 (network namespaces, see deploy/netns.py). A producer
on host `a` exposes tensors shaped like LLaVA-NeXT-Video-7B's (bf16): one
8-frame video's embeddings (1152 x 4096) and the KV cache of a 256-token
prompt (32 layers x K,V, each 256 x 4096, as 64 separate regions the way the
prefill worker exposes it). A consumer pulls each into preallocated buffers
with `read_into`, as the prefill and decode workers do:

- same namespace, UCX defaults: both on `a`; UCX may use shared memory, as
  workers on one machine do;
- same namespace, UCX over TCP: both on `a`, UCX limited to TCP (loopback);
- across namespaces, UCX over TCP: the consumer on `b`, every byte over the
  veth link, as between hosts without RDMA.

Each row is the median over the repetitions of one pull (a fresh readable per
pull, registrations cached; the first pull discarded). The control messages
(metadata out, nothing timed) travel over a small TCP socket.
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack

RESULTS = Path(__file__).parent / "results" / "cross_host.json"
CONTROL_PORT = 7000
FRAME = struct.Struct("!I")
HIDDEN = 4096
CASES = {
    "embeddings (1 video, 8 frames)": [(8 * 144, HIDDEN)],
    "KV cache (256 tokens)": [(256, HIDDEN)] * (32 * 2),
}
UCX_DEFAULTS = {"UCX_TLS": "all", "UCX_NET_DEVICES": "all"}


async def send(writer: asyncio.StreamWriter, message: Any) -> None:
    payload = msgpack.packb(message)
    writer.write(FRAME.pack(len(payload)) + payload)
    await writer.drain()


async def receive(reader: asyncio.StreamReader) -> Any:
    (length,) = FRAME.unpack(await reader.readexactly(FRAME.size))
    return msgpack.unpackb(await reader.readexactly(length))


# --- the producer: `python -m benchmarks.cross_host produce HOST` -------------------------


async def produce(host: str) -> None:
    """Answers each case name with the metadata of a fresh readable of that case's tensors."""
    import torch

    from transport import Connector, Descriptor

    connector = Connector.get("nixl")
    tensors = {
        name: [torch.randn(shape).to(torch.bfloat16) for shape in shapes]
        for name, shapes in CASES.items()
    }

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while name := await receive(reader):
            op = await connector.create_readable([Descriptor(t) for t in tensors[name]])
            await send(writer, op.metadata.to_dict())
            await op.wait_for_completion(timeout=60)
            await send(writer, "done")
        writer.close()

    server = await asyncio.start_server(serve, host, CONTROL_PORT)
    print("producing", flush=True)
    await server.serve_forever()


# --- the consumer: `python -m benchmarks.cross_host consume HOST --repeats N` -------------


async def consume(producer: str, repeats: int) -> dict[str, dict[str, float]]:
    import torch

    from transport import Connector, Descriptor, RdmaMetadata

    connector = Connector.get("nixl")
    reader, writer = await asyncio.open_connection(producer, CONTROL_PORT)
    results = {}
    for name, shapes in CASES.items():
        buffers = [Descriptor(torch.empty(shape, dtype=torch.bfloat16)) for shape in shapes]
        seconds = []
        for _ in range(repeats + 1):
            await send(writer, name)
            meta = RdmaMetadata.from_dict(await receive(reader))
            started = time.perf_counter()
            await connector.read_into(meta, buffers)
            seconds.append(time.perf_counter() - started)
            assert await receive(reader) == "done"
        median = statistics.median(seconds[1:])
        results[name] = {
            "bytes": meta.nbytes,
            "median_ms": round(median * 1e3, 3),
            "gbps": round(meta.nbytes / median / 1e9, 3),
        }
    await send(writer, None)
    writer.close()
    return results


# --- the driver ---------------------------------------------------------------------------


def run(repeats: int) -> dict[str, Any]:
    from deploy.netns import Network, unavailable

    reason = unavailable()
    if reason is not None:
        sys.exit(f"benchmarks.cross_host needs network namespaces: {reason}")
    me = [sys.executable, "-m", "benchmarks.cross_host"]
    scenarios = {
        "same namespace, UCX defaults": ("a", UCX_DEFAULTS),
        "same namespace, UCX over TCP": ("a", {}),
        "across namespaces, UCX over TCP (veth)": ("b", {}),
    }
    rows = {}
    with Network() as network, tempfile.TemporaryDirectory() as logs:
        hosts = {name: network.add_host(name) for name in ("a", "b")}
        for scenario, (consumer_host, env) in scenarios.items():
            log = Path(logs) / f"producer-{len(rows)}.log"
            producer = hosts["a"].start([*me, "produce", hosts["a"].address], log, env)
            while "producing" not in log.read_text():
                if producer.poll() is not None:
                    sys.exit(f"the producer failed:\n{log.read_text()}")
                time.sleep(0.1)
            command = [*me, "consume", hosts["a"].address, "--repeats", str(repeats)]
            done = hosts[consumer_host].run(command, timeout_s=600, env=env)
            if done.returncode != 0:
                sys.exit(f"the consumer failed:\n{done.stderr}")
            rows[scenario] = json.loads(done.stdout.splitlines()[-1])
            hosts["a"].stop()
    return {
        "host": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1min_at_end": round(os.getloadavg()[0], 1),
        },
        "method": f"median of {repeats} pulls (first discarded) of bf16 tensors into "
        "preallocated buffers; producer on namespace a, consumer on a or b",
        "scenarios": rows,
    }


def print_table(result: dict[str, Any]) -> None:
    print(f"{'scenario':<40} {'case':<32} {'MB':>7} {'ms':>9} {'GB/s':>7}")
    for scenario, cases in result["scenarios"].items():
        for name, row in cases.items():
            megabytes = row["bytes"] / 1e6
            print(
                f"{scenario:<40} {name:<32} {megabytes:>7.1f} "
                f"{row['median_ms']:>9.2f} {row['gbps']:>7.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS)
    commands = parser.add_subparsers(dest="role")
    producer = commands.add_parser("produce", help="(internal) the producer on its host")
    producer.add_argument("host")
    consumer = commands.add_parser("consume", help="(internal) the consumer on its host")
    consumer.add_argument("producer")
    consumer.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    if args.role == "produce":
        asyncio.run(produce(args.host))
    elif args.role == "consume":
        print(json.dumps(asyncio.run(consume(args.producer, args.repeats))))
    else:
        result = run(args.repeats)
        print_table(result)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
