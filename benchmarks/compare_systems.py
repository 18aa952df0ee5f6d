"""One command, one machine, one run: every system under the same load, side by side.

    .venv/bin/python -m benchmarks.compare_systems                   # engine, agg, disagg, vLLM
    .venv/bin/python -m benchmarks.compare_systems --encode-scaling  # disagg, 1/2/4 encode workers

Systems, in order: the in-process engine (`--in-process`, no serving at all),
`graphs.agg`, `graphs.disagg` (2 encode workers) and vLLM on the same tiny
checkpoint (skipped with its reason when `benchmarks/vllm/install.sh` has not
made its venv). Each gets the same load generator flags, so the same requests.
After each graph run the per-endpoint time the workers report in /metrics is
saved as a per-stage breakdown. Results: `benchmarks/results/<label>.json`,
`<label>-stages.json`, and `comparison.md` (+ PNG plots where matplotlib is
importable; `benchmarks/.venv-aiperf/bin/python -m benchmarks.loadgen.compare`
draws them from the same JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

from benchmarks.loadgen import compare
from benchmarks.loadgen.__main__ import main as loadgen
from graphs.serve import ROOT, serve_graph

STAGE = re.compile(
    r'^vidgraph_worker_stat\{component="(\w+)",instance="[^"]+",'
    r'stat="(requests|request_seconds)_(\w+)"\} (\S+)$',
    re.M,
)


def stage_breakdown(metrics: str) -> dict[str, dict[str, float]]:
    """Mean seconds per call of each component endpoint, summed over instances."""
    totals: dict[tuple[str, str], dict[str, float]] = {}
    for component, kind, endpoint, value in STAGE.findall(metrics):
        if endpoint.startswith("_"):
            continue
        totals.setdefault((component, endpoint), {}).setdefault(kind, 0.0)
        totals[(component, endpoint)][kind] += float(value)
    return {
        f"{component}.{endpoint}": {
            "calls": t.get("requests", 0.0),
            "mean_ms": 1e3 * t.get("request_seconds", 0.0) / max(t.get("requests", 0.0), 1.0),
        }
        for (component, endpoint), t in sorted(totals.items())
    }


def run_graph(
    results: Path, label: str, graph: str, config: str, load: list[str], *overrides: str
) -> Path:
    out = results / f"{label}.json"
    with serve_graph(
        graph, ROOT / "configs" / config, *overrides, log_path=results / f".{label}.log"
    ) as running:
        loadgen(
            [
                *load,
                "--base-url",
                f"{running.base_url}/v1",
                "--label",
                label,
                "--wait-ready",
                "120",
                "--out",
                str(out),
            ]
        )
        stages = stage_breakdown(httpx.get(f"{running.base_url}/metrics").text)
    (results / f"{label}-stages.json").write_text(json.dumps(stages, indent=2) + "\n")
    return out


def run_engine(results: Path, load: list[str]) -> None:
    loadgen([*load, "--in-process", "--label", "engine", "--out", str(results / "engine.json")])


def run_vllm(results: Path, load: list[str]) -> Path | None:
    if not (ROOT / "benchmarks" / ".venv-vllm" / "bin" / "python").exists():
        print("vLLM unavailable: run `bash benchmarks/vllm/install.sh` first; going on without it")
        return None
    out = results / "vllm.json"
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "vllm" / "bench.sh"), *load, "--out", str(out)],
        cwd=ROOT,
    )
    return out if done.returncode == 0 else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,2,4,8,16")
    parser.add_argument("--num-requests", default="24")
    parser.add_argument("--max-tokens", default="32")
    parser.add_argument("--encode-scaling", action="store_true")
    parser.add_argument(
        "--systems",
        default="engine,agg,disagg,vllm",
        help="which to run now; the others' latest results are reused in the table",
    )
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    results = args.results
    load = [
        "--concurrency",
        args.concurrency,
        "--num-requests",
        args.num_requests,
        "--max-tokens",
        args.max_tokens,
        "--warmup",
        "2",
    ]
    results.mkdir(parents=True, exist_ok=True)
    print(f"load average at start: {os.getloadavg()}")

    if args.encode_scaling:
        video_only = [*load, "--video-share", "1", "--video-seconds", "2,4"]
        outputs = [
            run_graph(
                results,
                f"disagg-encode{n}",
                "graphs.disagg",
                "disagg.yaml",
                video_only,
                f"--EncodeWorker.workers={n}",
            )
            for n in (1, 2, 4)
        ]
        name = "encode_scaling"
    else:
        mix = [*load, "--repeat-share", "0.2", "--text-share", "0.2"]
        runners = {
            "engine": lambda: run_engine(results, mix),
            "agg": lambda: run_graph(results, "vidgraph-agg", "graphs.agg", "agg.yaml", mix),
            "disagg": lambda: run_graph(
                results, "vidgraph-disagg", "graphs.disagg", "disagg.yaml", mix
            ),
            "vllm": lambda: run_vllm(results, mix),
        }
        for system in args.systems.split(","):
            runners[system]()
        outputs = [
            results / f"{label}.json"
            for label in ("engine", "vidgraph-agg", "vidgraph-disagg", "vllm")
            if (results / f"{label}.json").exists()
        ]
        name = "comparison"
    print(f"load average at end: {os.getloadavg()}")
    return compare.main([*map(str, outputs), "--out", str(results / name)])


if __name__ == "__main__":
    sys.exit(main())
