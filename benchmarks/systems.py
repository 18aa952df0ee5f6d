"""The systems a comparison drives: how each starts, where its requests go, which processes it has.

- `engine`: the in-process baseline (`benchmarks.inprocess`): media, the same
  embedding cache and the engine in the driver's own process, no serving.
- `agg`, `disagg`: `vidgraph serve graphs.agg|graphs.disagg` on the configs in
  `configs/`, over HTTP; `disagg+EncodeWorker.workers=4` adds that override
  (`+` before each), for variants of a graph side by side.
- `vllm-agg`, `vllm-disagg`: the same graphs with vLLM under their prefill and
  decode workers (`configs/*-vllm.yaml`), vLLM set up as plain `vllm serve` is
  (its default compilation, not the configs' `enforce-eager` for quick tests).
- `vllm`: vLLM (CPU) on the same tiny checkpoint, from `.venv-vllm`
  (`make install-vllm`), on the same cores, set up as vLLM sets
  itself up there: its compute threads on all cores but one, which it keeps for
  its API server and scheduler. (Bound to every core instead, its threads fought
  its own API server: TPOT 27 ms against 4 ms, in a 2-core smoke run.)

Every process a system starts inherits the driver's CPU affinity, so pinning the
driver (what `taskset` does) gives each system the same cores. A system that
cannot start is skipped with its reason, never silently.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import tempfile
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks.loadgen.client import send
from benchmarks.loadgen.runner import RunConfig, Sender, wait_ready
from benchmarks.loadgen.workload import PreparedRequest
from benchmarks.soak import graph_processes
from graphs.serve import ROOT, free_port, serve_graph

AS_SERVED = ("Common.vllm-args={}",)
GRAPHS = {
    "agg": ("graphs.agg", "agg.yaml", ()),
    "disagg": ("graphs.disagg", "disagg.yaml", ()),
    "vllm-agg": ("graphs.agg", "agg-vllm.yaml", AS_SERVED),
    "vllm-disagg": ("graphs.disagg", "disagg-vllm.yaml", AS_SERVED),
}
VLLM_VENV = ROOT / ".venv-vllm"
STARTUP_S = 600.0
WORKER_STAT = re.compile(
    r'^vidgraph_worker_stat\{component="([^"]+)",instance="([^"]+)",stat="([^"]+)"\} (\S+)$', re.M
)
STAGE = re.compile(r"(requests|request_seconds)_(\w+)")


class Unavailable(Exception):
    """A system that cannot run here; the message says why."""


@dataclass
class System:
    """A started system: how to send it a request and how to find its processes."""

    name: str
    sender: Sender
    processes: Callable[[], dict[str, int]]
    metrics_url: str | None = None


def worker_stats_in(metrics: str) -> dict[tuple[str, str, str], float]:
    """Every worker stat in a /metrics body, by (component, instance, stat)."""
    return {(c, i, stat): float(v) for c, i, stat, v in WORKER_STAT.findall(metrics)}


def component_stat(metrics: str, component: str, stat: str) -> dict[str, float]:
    """One stat of each of a component's instances in a /metrics body, by instance id."""
    found = worker_stats_in(metrics).items()
    return {i: v for (c, i, s), v in found if (c, s) == (component, stat)}


def stage_totals(metrics: str) -> dict[str, dict[str, float]]:
    """Calls and seconds of each component endpoint, summed over its instances."""
    totals: dict[str, dict[str, float]] = {}
    for (component, _, stat), value in worker_stats_in(metrics).items():
        matched = STAGE.fullmatch(stat)
        if matched is None or matched[2].startswith("_"):
            continue
        kind, endpoint = matched.groups()
        stage = totals.setdefault(f"{component}.{endpoint}", {"calls": 0.0, "seconds": 0.0})
        stage["calls" if kind == "requests" else "seconds"] += value
    return totals


def stage_means(before: dict, after: dict) -> dict[str, dict[str, float]]:
    """Mean milliseconds per call of each stage between two `stage_totals` snapshots."""
    means = {}
    for stage, end in sorted(after.items()):
        start = before.get(stage, {"calls": 0.0, "seconds": 0.0})
        calls = end["calls"] - start["calls"]
        if calls > 0:
            seconds = end["seconds"] - start["seconds"]
            means[stage] = {"calls": calls, "mean_ms": 1e3 * seconds / calls}
    return means


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (children first, then theirs).

    /proc lists a child under the thread that started it, so every thread is read:
    a worker starts vLLM's engine process from a worker thread, not its main one.
    """
    found, queue = [], [pid]
    while queue:
        parent = queue.pop(0)
        children = []
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children += map(int, (task / "children").read_text().split())
            except FileNotFoundError:
                continue
        found += children
        queue += children
    return found


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except FileNotFoundError:
        return "gone"


def peak_rss_reset(pids: list[int]) -> None:
    """Restart each process's peak-RSS counter (VmHWM), so the next read covers one load point."""
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            pass


def peak_rss_mib(processes: dict[str, int]) -> dict[str, float]:
    """Peak resident memory (VmHWM) of each process since its last reset, in MiB."""
    peaks = {}
    for name, pid in processes.items():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peaks[name] = int(line.split()[1]) / 1024
    return peaks


def cpus_allowed(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def http_system(name: str, client: httpx.AsyncClient, base_url: str, **kw) -> System:
    chat_url = f"{base_url}/v1/chat/completions"

    async def sender(request: PreparedRequest):
        return await send(client, chat_url, request)

    return System(name, sender, **kw)


async def start_engine(stack: AsyncExitStack, model: str) -> System:
    from benchmarks.inprocess import InProcess

    baseline = await InProcess.load(model)
    stack.push_async_callback(baseline.close)
    pid = os.getpid()
    return System("engine", baseline.send, lambda: {"engine+client": pid})


async def start_graph(
    stack: AsyncExitStack, name: str, client: httpx.AsyncClient, logs: Path, model: str
) -> System:
    base, *overrides = name.split("+")
    graph, config, defaults = GRAPHS[base]
    if base.startswith("vllm-") and not (VLLM_VENV / "bin" / "python").exists():
        raise Unavailable("no .venv-vllm: run `make install-vllm`")
    running = await asyncio.to_thread(
        stack.enter_context,
        serve_graph(
            graph,
            ROOT / "configs" / config,
            *(f"--{override}" for override in (*defaults, *overrides)),
            log_path=logs / f".{name}.log",
            startup_timeout_s=STARTUP_S,
        ),
    )
    system = http_system(
        name,
        client,
        running.base_url,
        processes=lambda: graph_processes(running),
        metrics_url=f"{running.base_url}/metrics",
    )
    await wait_ready(client, RunConfig(f"{running.base_url}/v1", model, 1), STARTUP_S)
    return system


async def start_vllm(
    stack: AsyncExitStack, client: httpx.AsyncClient, logs: Path, model: str
) -> System:
    if not (VLLM_VENV / "bin" / "python").exists():
        raise Unavailable("no .venv-vllm: run `make install-vllm`")
    work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vllm-")))
    vidgraph = ROOT / ".venv" / "bin" / "vidgraph"
    await asyncio.to_thread(
        subprocess.run, [str(vidgraph), "make-tiny-model", str(work / "tiny")], check=True
    )
    port = free_port()
    log = (logs / ".vllm.log").open("wb")
    stack.callback(log.close)
    server = subprocess.Popen(
        ["bash", str(ROOT / "benchmarks" / "vllm" / "serve.sh"), str(work / "tiny"), str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    stack.callback(stop_tree, server)
    base_url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(client, RunConfig(f"{base_url}/v1", model, 1), STARTUP_S)
    except TimeoutError as error:
        raise Unavailable(f"vLLM did not answer (log: {logs / '.vllm.log'}): {error}") from None
    return http_system(
        "vllm",
        client,
        base_url,
        processes=lambda: {
            f"{process_name(pid)}[{pid}]": pid for pid in [server.pid, *descendants(server.pid)]
        },
    )


def stop_tree(process: subprocess.Popen) -> None:
    """SIGTERM the process group a system runs in, SIGKILL it if it lingers."""
    try:
        os.killpg(process.pid, 15)
        process.wait(timeout=60)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait()


async def start(
    name: str,
    stack: AsyncExitStack,
    client: httpx.AsyncClient,
    logs: Path,
    model: str,
) -> System:
    if name == "engine":
        return await start_engine(stack, model)
    if name.split("+")[0] in GRAPHS:
        return await start_graph(stack, name, client, logs, model)
    if name == "vllm":
        return await start_vllm(stack, client, logs, model)
    raise Unavailable(f"unknown system {name!r} (known: engine, {', '.join(GRAPHS)}, vllm)")
