"""Every system under the same load, in one invocation, interleaved, on the same cores.

    python -m benchmarks.compare --systems engine,agg,disagg --concurrency 1,16 --repeats 3
    python -m benchmarks.compare --scenario rate --systems agg,vllm     # Poisson, to saturation

Starts every system first (`benchmarks.systems`), warms each up, then for each
repeat and load point runs the systems one after another, the order rotated by
one each repeat, so slow drift of the machine (other work, thermal, caches)
spreads over all of them instead of landing on whichever ran last. The driver
pins itself to `--cpus` (as `taskset -c` would) before it starts anything, so
the single-process baseline and every graph process together get the same cores.
Each (repeat, load point) sends the same requests to every system.

Writes one JSON (default `benchmarks/results/compare/<scenario>-<UTC time>.json`):
the provenance (commit, dirty flag, date, CPU, cores, load average before and
after, package versions, the exact command), the configuration, every run with
its summary, peak RSS per process and per-stage time (graphs, from /metrics),
and per (system, load point) the median and min-max over repeats. Then
`benchmarks/report.py` turns it into tables and plots beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path

import httpx

from benchmarks import report
from benchmarks.loadgen.options import numbers
from benchmarks.loadgen.report import load_name
from benchmarks.loadgen.runner import LoadPoint, RunConfig, run_point, warm_up
from benchmarks.loadgen.stats import Slo, max_rate_within_slo, spread
from benchmarks.loadgen.workload import PreparedRequest, Workload, WorkloadSpec
from benchmarks.provenance import finish, parse_cpus, provenance
from benchmarks.scenarios import SCENARIOS
from benchmarks.systems import (
    System,
    Unavailable,
    cpus_allowed,
    peak_rss_mib,
    peak_rss_reset,
    stage_means,
    stage_totals,
    start,
)
from graphs.serve import ROOT

RESULTS = ROOT / "benchmarks" / "results" / "compare"
# Per load point and repeat: (name, path into the summary).
METRICS = {
    "ttft_p50_ms": ("ttft_ms", "p50"),
    "ttft_p99_ms": ("ttft_ms", "p99"),
    "tpot_mean_ms": ("tpot_ms", "mean"),
    "itl_p50_ms": ("itl_ms", "p50"),
    "e2e_p50_ms": ("e2e_ms", "p50"),
    "request_per_s": ("request_throughput",),
    "output_tokens_per_s": ("output_token_throughput",),
    "goodput_req_per_s": ("goodput", "request_goodput"),
    "slo_attainment": ("goodput", "slo_attainment"),
    "errors": ("errors",),
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--systems", default="engine,agg,disagg,vllm", help="comma-separated")
    p.add_argument("--scenario", default="concurrency", choices=sorted(SCENARIOS))
    p.add_argument("--concurrency", type=numbers(int), help="closed-loop points (scenario's)")
    p.add_argument("--rate", type=numbers(float), help="Poisson rates in requests/s instead")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--num-requests", type=int, default=100, help="per load point and repeat")
    p.add_argument("--warmup", type=int, default=4, help="unmeasured requests per system")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpus", help="core list as taskset takes it (default: this process's)")
    p.add_argument("--slo-ttft-ms", type=float, default=500.0)
    p.add_argument("--slo-tpot-ms", type=float, default=50.0)
    p.add_argument("--model", default="tiny")
    p.add_argument("--out", type=Path, help="the result JSON (default: see above)")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.num_requests < 1:
        p.error("--repeats and --num-requests must be at least 1")
    return args


def rotated(systems: Sequence[System], repeat: int) -> list[System]:
    """Repeat r starts with system r (mod n): each system takes each position in turn."""
    shift = repeat % len(systems) if systems else 0
    return [*systems[shift:], *systems[:shift]]


async def measure(
    system: System,
    client: httpx.AsyncClient,
    config: RunConfig,
    point: LoadPoint,
    requests: list[PreparedRequest],
    label: str,
) -> dict:
    """One load point on one system, with its peak RSS per process and per-stage time."""
    processes = system.processes()
    peak_rss_reset(list(processes.values()))
    before = stage_totals((await client.get(system.metrics_url)).text) if system.metrics_url else {}
    run = await run_point(system.sender, config, point, requests, label)
    if system.metrics_url:
        after = stage_totals((await client.get(system.metrics_url)).text)
        run["stages"] = stage_means(before, after)
    run["peak_rss_mib"] = peak_rss_mib(processes)
    return run


async def compare(args: argparse.Namespace, spec: WorkloadSpec, points: list[LoadPoint]) -> dict:
    config = RunConfig(
        base_url="",
        model=args.model,
        num_requests=args.num_requests,
        warmup=args.warmup,
        slo=Slo(ttft_ms=args.slo_ttft_ms, tpot_ms=args.slo_tpot_ms),
        seed=args.seed,
    )
    logs = args.out.parent if args.out else RESULTS  # servers' logs: .NAME.log (git-ignored)
    logs.mkdir(parents=True, exist_ok=True)
    workload = Workload(spec)
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(
            httpx.AsyncClient(
                timeout=httpx.Timeout(config.request_timeout_s, connect=10.0),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
                trust_env=False,
            )
        )
        systems: list[System] = []
        skipped: dict[str, str] = {}
        for name in args.systems.split(","):
            try:
                systems.append(await start(name, stack, client, logs, args.model))
            except (Unavailable, RuntimeError, TimeoutError) as error:
                print(f"{name} skipped: {error}", file=sys.stderr)
                skipped[name] = str(error)
        for system in systems:
            await warm_up(system.sender, workload, config)
        processes = {
            s.name: {n: cpus_allowed(pid) for n, pid in s.processes().items()} for s in systems
        }
        runs = []
        for repeat in range(args.repeats):
            for index, point in enumerate(points):
                first = (repeat * len(points) + index) * args.num_requests
                requests = workload.prepare(range(first, first + args.num_requests), args.model)
                for position, system in enumerate(rotated(systems, repeat)):
                    label = f"{system.name} #{repeat + 1}"
                    run = await measure(system, client, config, point, requests, label)
                    where = {"system": system.name, "repeat": repeat, "position": position}
                    runs.append({**where, **run})
    return {
        "systems": [s.name for s in systems],
        "skipped": skipped,
        "cpus_allowed": processes,
        "runs": runs,
    }


def _at(summary: dict, path: tuple[str, ...]) -> float | None:
    for key in path:
        summary = summary[key]
    return summary  # type: ignore[return-value]


def aggregate(runs: Sequence[dict]) -> list[dict]:
    """Per (system, load point): each metric's median and min-max over repeats."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["system"], load_name(run)), []).append(run)
    rows = []
    for (system, load), group in groups.items():
        names = sorted({p for run in group for p in run["peak_rss_mib"]})
        stages = sorted({s for run in group for s in run.get("stages", {})})
        rows.append(
            {
                "system": system,
                "load": load,
                "concurrency": group[0]["concurrency"],
                "rate": group[0]["rate"],
                "repeats": len(group),
                **{m: spread([_at(r["summary"], at) for r in group]) for m, at in METRICS.items()},
                "peak_rss_mib": {
                    "total": spread([sum(r["peak_rss_mib"].values()) for r in group]),
                    **{n: spread([r["peak_rss_mib"].get(n) for r in group]) for n in names},
                },
                "stages_mean_ms": {
                    s: spread([r.get("stages", {}).get(s, {}).get("mean_ms") for r in group])
                    for s in stages
                },
            }
        )
    return rows


def headline(rows: Sequence[dict]) -> dict[str, dict]:
    """Per system: its best goodput of a closed-loop sweep, or DistServe's rate of a rate sweep."""
    best: dict[str, dict] = {}
    for system in dict.fromkeys(row["system"] for row in rows):
        mine = [row for row in rows if row["system"] == system]
        rated = [(row["rate"], row["slo_attainment"]["median"]) for row in mine if row["rate"]]
        best[system] = {
            "max_goodput_req_per_s": max(
                (row["goodput_req_per_s"]["median"] or 0.0 for row in mine), default=None
            ),
            "max_rate_within_slo": max_rate_within_slo(rated) if rated else None,
        }
    return best


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cpus:
        os.sched_setaffinity(0, parse_cpus(args.cpus))  # inherited by all that starts below
    # Graph processes import this checkout, the one the provenance names, not whichever
    # the venv's editable install points at (it moves when someone lands or installs).
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.getenv("PYTHONPATH")]))
    scenario = SCENARIOS[args.scenario]
    spec = WorkloadSpec(**{**scenario.mix, "max_tokens": args.max_tokens, "seed": args.seed})
    points = scenario.points(args.concurrency, args.rate)
    started = time.time()
    record = {"provenance": provenance(ROOT, os.sched_getaffinity(0))}
    record["config"] = {
        "scenario": args.scenario,
        "description": scenario.description,
        "systems": args.systems.split(","),
        "load_points": [str(p) for p in points],
        "repeats": args.repeats,
        "num_requests": args.num_requests,
        "warmup": args.warmup,
        "slo": {"ttft_ms": args.slo_ttft_ms, "tpot_ms": args.slo_tpot_ms},
        "workload": spec.to_json(),
        "model": args.model,
    }
    outcome = asyncio.run(compare(args, spec, points))
    record["provenance"] = finish(record["provenance"], started)
    record.update(outcome)
    record["aggregate"] = aggregate(outcome["runs"])
    record["headline"] = headline(record["aggregate"])
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    out = args.out or RESULTS / f"{args.scenario}-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    report.main([str(out)])
    return 0 if any(run["summary"]["completed"] for run in outcome["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
