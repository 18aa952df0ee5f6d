"""PNG plots of a sweep, one line per system.

matplotlib is optional (the project's venv does not need it to serve; the
`bench` extra brings it): without it the plots are skipped with a message.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

Metric = Callable[[dict], float | None]
# One system's points: (x, value, low, high); low and high draw a bar when they differ.
Series = Sequence[tuple[float, float, float, float]]


def x_value(run: dict) -> float:
    """Closed-loop points are placed by concurrency, Poisson ones by arrival rate."""
    return run["concurrency"] if run["rate"] is None else run["rate"]


def draw(lines: Mapping[str, Series], ylabel: str, rated: bool, path: Path) -> bool:
    """Writes `path`; False (with a message on stderr) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"skipped {path.name}: pip install -e '.[bench]' for matplotlib", file=sys.stderr)
        return False
    figure, axes = plt.subplots(figsize=(6, 4))
    for label, points in lines.items():
        points = sorted(points)
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        spread = [[y - low for _, y, low, _ in points], [high - y for _, y, _, high in points]]
        bars = spread if any(any(side) for side in spread) else None
        axes.errorbar(xs, ys, yerr=bars, marker="o", capsize=3, label=label)
    axes.set_xlabel("request rate (req/s)" if rated else "concurrency")
    if not rated:
        axes.set_xscale("log", base=2)
    ticks = sorted({p[0] for points in lines.values() for p in points})
    axes.set_xticks(ticks, [f"{tick:g}" for tick in ticks])
    axes.minorticks_off()
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def plot_sweep(results: Sequence[dict], metric: Metric, ylabel: str, path: Path) -> bool:
    """One line per load-generator result JSON."""
    lines = {
        result["label"]: [
            (x_value(run), y, y, y)
            for run in result["runs"]
            if (y := metric(run["summary"])) is not None
        ]
        for result in results
    }
    rated = all(run["rate"] is not None for result in results for run in result["runs"])
    return draw(lines, ylabel, rated, path)
