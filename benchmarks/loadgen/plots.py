"""PNG plots of a sweep, one line per system.

matplotlib is optional (the project's venv does not need it to serve): without
it the plots are skipped with a message saying how to get them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

Metric = Callable[[dict], float | None]


def x_value(run: dict) -> float:
    """Closed-loop points are placed by concurrency, Poisson ones by arrival rate."""
    return run["concurrency"] if run["rate"] is None else run["rate"]


def plot_sweep(results: Sequence[dict], metric: Metric, ylabel: str, path: Path) -> bool:
    """Writes `path`; False (with a message on stderr) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            f"skipped {path.name}: matplotlib is not installed here; run this with "
            "benchmarks/.venv-aiperf/bin/python (it has matplotlib) or pip install matplotlib",
            file=sys.stderr,
        )
        return False
    figure, axes = plt.subplots(figsize=(6, 4))
    for result in results:
        points = sorted((x_value(run), metric(run["summary"])) for run in result["runs"])
        xs = [x for x, y in points if y is not None]
        ys = [y for x, y in points if y is not None]
        axes.plot(xs, ys, marker="o", label=result["label"])
    open_loop = all(run["rate"] is not None for result in results for run in result["runs"])
    axes.set_xlabel("request rate (req/s)" if open_loop else "concurrency")
    if not open_loop:
        axes.set_xscale("log", base=2)
    ticks = sorted({x_value(run) for result in results for run in result["runs"]})
    axes.set_xticks(ticks, [f"{tick:g}" for tick in ticks])
    axes.minorticks_off()
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True
