"""One disaggregated graph for the whole reliability suite, on an etcd the tests can restart.

Starting a graph costs processes that import torch, so every module here
shares this one. It runs two processors and two decode workers (as any
deployment that must survive a crash would), so a killed one's survivor keeps
serving while the supervisor brings the other back. Short leases on the NIXL
buffers (5 s instead of 60) let the leak checks see the buffers of dead
requests freed within seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from reliability_helpers import (
    MAX_INFLIGHT,
    WORKERS,
    ExtraFrontend,
    RestartableEtcd,
    wait_until,
)

from graphs.serve import ROOT, RunningGraph, free_port, serve_graph
from media.samples import write_sample_video
from runtime.processes import dies_with_parent, stop_process

CONFIG = ROOT / "configs" / "disagg.yaml"


@pytest.fixture(scope="package")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("reliability-media")
    for seed in (1, 2):
        write_sample_video(
            folder / f"v{seed}.mp4", seconds=1.5, fps=8, width=80, height=48, seed=seed
        )
    return folder


@pytest.fixture(scope="package")
def etcd() -> Iterator[RestartableEtcd]:
    with RestartableEtcd() as server:
        yield server


@pytest.fixture(scope="package")
def graph(
    etcd: RestartableEtcd, media_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGraph]:
    with serve_graph(
        "graphs.disagg",
        CONFIG,
        f"--etcd={etcd.address}",
        f"--EncodeWorker.allowed-local-media-path={media_dir}",
        f"--Frontend.max-inflight={MAX_INFLIGHT}",
        "--Frontend.max-queued=0",  # beyond max-inflight: 429 at once (the admission test)
        *(f"--{name}.workers={count}" for name, count in WORKERS.items() if name != "Frontend"),
        "--PrefillWorker.kv-lease-s=5",
        "--EncodeWorker.read-lease-s=5",
        log_path=tmp_path_factory.mktemp("reliability") / "serve.log",
    ) as running:
        yield running


@pytest.fixture(scope="module")
def start_frontend(
    graph: RunningGraph, etcd: RestartableEtcd, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., ExtraFrontend]]:
    """`start_frontend(*overrides, env=...)`: a Frontend beside the graph, stopped after."""
    started: list[subprocess.Popen[bytes]] = []
    logs = tmp_path_factory.mktemp("frontends")

    def start(*overrides: str, env: dict[str, str] | None = None) -> ExtraFrontend:
        port = free_port()
        log_path = logs / f"frontend-{port}.log"
        command = [sys.executable, "-m", "runtime.worker", "graphs.disagg", "Frontend"]
        command += ["-f", str(CONFIG), "--etcd", etcd.address, f"--Frontend.port={port}"]
        command += ["--Frontend.host=127.0.0.1", *overrides]
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                dies_with_parent(command),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        started.append(process)
        frontend = ExtraFrontend(process, port, log_path)
        wait_until(
            f"the extra frontend answers /live (log: {log_path})",
            lambda: (
                process.poll() is None and httpx.get(f"{frontend.base_url}/live").status_code == 200
            ),
            60,
        )
        return frontend

    yield start
    for process in started:
        stop_process(process, grace_s=40)
