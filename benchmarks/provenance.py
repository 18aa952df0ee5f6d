"""Where and how a benchmark ran, so a reader can judge (and repeat) its numbers.

Recorded with every result: the commit and whether the tree had uncommitted
changes, the date, the CPU model and the cores the run was pinned to, the load
average before and after (other work on the machine shows up there), the
versions of the packages that decide speed, and the exact command.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

PACKAGES = ("vidgraph", "torch", "transformers", "av", "numpy", "nixl-cu13", "httpx", "uvicorn")


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def format_cpus(cpus: set[int]) -> str:
    """`{0, 1, 2, 5}` as taskset writes it: `0-2,5`."""
    ranges: list[list[int]] = []
    for cpu in sorted(cpus):
        if ranges and cpu == ranges[-1][1] + 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def parse_cpus(text: str) -> set[int]:
    """taskset's list syntax, `0-2,5`, as a set of core numbers."""
    cpus: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def provenance(root: Path, cpus: set[int], argv: list[str] | None = None) -> dict:
    """Everything known before the run; `finish` adds what is known after."""
    return {
        "git_commit": git(root, "rev-parse", "HEAD"),
        "git_dirty": bool(git(root, "status", "--porcelain", "--untracked-files=no")),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu_model": cpu_model(),
        "cpus_online": os.cpu_count(),
        "cpus_used": format_cpus(cpus),
        "load_average_before": list(os.getloadavg()),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions(),
        "command": shlex.join(argv if argv is not None else sys.orig_argv),
    }


def finish(record: dict, started: float) -> dict:
    return {**record, "load_average_after": list(os.getloadavg()), "wall_s": time.time() - started}
