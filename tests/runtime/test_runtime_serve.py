"""`vidgraph serve` end to end: a real supervisor, embedded etcd, worker processes, HTTP."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from runtime.ports import free_ports
from runtime.processes import alive

pytestmark = pytest.mark.timeout(90)

HERE = Path(__file__).parent
VIDGRAPH = str(Path(sys.executable).parent / "vidgraph")


def children_of(pid: int) -> dict[int, str]:
    """Live child processes of `pid` -> their command lines, from /proc."""
    children = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        state, parent = stat.rsplit(")", 1)[1].split()[:2]
        if int(parent) == pid and state != "Z":
            children[int(entry.name)] = cmdline
    return children


class Serve:
    """`vidgraph serve` as a user runs it, with its stdout read line by line."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [VIDGRAPH, "serve", *args], cwd=HERE, stdout=subprocess.PIPE, text=True
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout_s: float = 30) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                assert self.process.poll() is None, "vidgraph serve exited early"
                continue
            if text in line:
                return line
        raise AssertionError(f"vidgraph serve never printed {text!r}")

    def workers(self, component: str) -> set[int]:
        return {
            pid
            for pid, cmdline in children_of(self.process.pid).items()
            if f"runtime.worker echo_graph {component} " in cmdline
        }


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[Serve, int]]:
    (port,) = free_ports(1)
    config = tmp_path / "echo.yaml"
    config.write_text(
        "Common: {greeting: hello}\n"
        "Front: {port: 8000}\n"
        "Echo: {common-configs: [greeting], ServiceArgs: {workers: 2}}\n"
    )
    running = Serve("echo_graph", "-f", str(config), f"--Front.port={port}")
    try:
        yield running, port
    finally:
        if running.process.poll() is None:
            running.process.kill()  # its children die with it (PDEATHSIG)
            running.process.wait()


def ask(port: int, text: str) -> list[dict]:
    response = httpx.post(f"http://127.0.0.1:{port}/echo", json={"text": text}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_serve_answers_survives_a_killed_worker_and_leaves_nothing(serve) -> None:
    vidgraph, port = serve
    vidgraph.wait_for("started etcd on")
    assert (
        vidgraph.wait_for("listening on") == f"vidgraph: Front listening on http://127.0.0.1:{port}"
    )
    assert ask(port, "hi")[0]["text"] == "hello: hi"

    first_workers = vidgraph.workers("Echo")
    assert len(first_workers) == 2
    victim = min(first_workers)
    os.kill(victim, signal.SIGKILL)
    vidgraph.wait_for(f"(pid {victim}) exited with -9; restarting")

    # The replacement registers and takes its share of the requests.
    deadline = time.monotonic() + 90
    while True:
        current = vidgraph.workers("Echo")
        served = {reply["pid"] for _ in range(4) for reply in ask(port, "again")}
        if len(current) == 2 and victim not in current and served == current:
            break
        assert time.monotonic() < deadline, f"workers {current}, served by {served}"
        time.sleep(0.2)

    everything = set(children_of(vidgraph.process.pid))
    assert len(everything) == 4  # etcd, Front, two Echo
    vidgraph.process.send_signal(signal.SIGTERM)
    assert vidgraph.process.wait(timeout=30) == 0
    assert [pid for pid in everything if alive(pid)] == []


def test_serve_refuses_a_bad_config_naming_file_section_and_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("Echo: {greting: hi}\n")

    result = subprocess.run(
        [VIDGRAPH, "serve", "echo_graph", "-f", str(config)],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode != 0
    assert f"{config}: section 'Echo', key 'greting': unknown key" in result.stderr
