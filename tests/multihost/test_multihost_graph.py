"""The disaggregated graph across hosts, each a network namespace with its own address.

    a: etcd, Frontend, Processor    b: DecodeWorker    c: EncodeWorker    d: PrefillWorker
    e: one more EncodeWorker, started while the graph serves

Prefill gets a host of its own (the issue puts it beside decode) so that the KV
cache crosses the network too, not only the embeddings. UCX may use TCP on
`eth0` only, so every NIXL byte must show up in the kernel's link counters.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest
from graph_helpers import (
    MAX_TOKENS,
    Reference,
    ask,
    data_url,
    token_ids,
    user_message,
    worker_stat,
    worker_stats,
)
from multihost_cluster import SpreadGraph

from deploy.netns import Host, Network
from engine import resolve_model
from media.samples import write_sample_video

ROOT = Path(__file__).resolve().parents[2]
PLACEMENT = {
    "a": ["Frontend", "Processor"],
    "b": ["DecodeWorker"],
    "c": ["EncodeWorker"],
    "d": ["PrefillWorker"],
}
# Round-robin from prefill to encode, so that two requests reach both encode workers.
PREFILL_ROUTER = "--PrefillWorker.router=round-robin"


@pytest.fixture(scope="module")
def hosts(network: Network) -> dict[str, Host]:
    return {name: network.add_host(name) for name in PLACEMENT}


@pytest.fixture(scope="module")
def graph(hosts: dict[str, Host], tmp_path_factory: pytest.TempPathFactory) -> SpreadGraph:
    resolve_model("tiny")  # built once here, not raced for by every worker
    spread = SpreadGraph(
        "graphs.disagg", ROOT / "configs" / "disagg.yaml", tmp_path_factory.mktemp("hosts")
    )
    spread.start_etcd(hosts["a"])
    for name, components in PLACEMENT.items():
        for component in components:
            spread.start_worker(hosts[name], component, PREFILL_ROUTER)
    spread.wait_until(
        "healthy",
        lambda: httpx.get(f"{spread.base_url}/health", timeout=5).status_code == 200,
        timeout_s=300,
    )
    return spread


@pytest.fixture(scope="module")
def client(graph: SpreadGraph) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{graph.base_url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def reference() -> Reference:
    return Reference(Path(resolve_model("tiny")))


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], Path]:
    """`video(seed)`: a short MP4 whose content depends on `seed`."""
    folder = tmp_path_factory.mktemp("media")

    def make(seed: int) -> Path:
        path = folder / f"sample-{seed}.mp4"
        write_sample_video(path, seconds=1.5, fps=8, width=80, height=48, seed=seed)
        return path

    return make


def ask_about(client: openai.OpenAI, clip: Path) -> list[int]:
    """Greedy token ids for a question about `clip`, sent inline: hosts share no files."""
    answer = ask(client, user_message("What happens?", [data_url(clip)]))
    return token_ids(answer.choices[0].logprobs.content)


def test_every_worker_registers_its_hosts_address(
    graph: SpreadGraph, hosts: dict[str, Host]
) -> None:
    placed_hosts = {f"tcp://{host.address}:": name for name, host in hosts.items()}
    for name, components in PLACEMENT.items():
        for component in components:
            addresses = [i["address"] for i in graph.instances(component)]
            # Under random order the new-host test may already have added an encode
            # worker on a host of its own (not one of `hosts`): it is not counted here.
            on = [placed_hosts.get(a.rsplit(":", 1)[0] + ":") for a in addresses]
            assert [h for h in on if h is not None] == [name], (component, addresses)


def test_greedy_answer_across_hosts_equals_transformers(
    graph: SpreadGraph,
    hosts: dict[str, Host],
    client: openai.OpenAI,
    reference: Reference,
    video: Callable[[int], Path],
) -> None:
    clip = video(1)
    _, encode_sent = hosts["c"].link_bytes()
    _, prefill_sent = hosts["d"].link_bytes()
    embeddings = worker_stat(graph, "EncodeWorker", "transport_bytes_served")
    kv = worker_stat(graph, "PrefillWorker", "transport_bytes_served")

    assert ask_about(client, clip) == reference.greedy("What happens?", [clip], MAX_TOKENS)

    embeddings = worker_stat(graph, "EncodeWorker", "transport_bytes_served") - embeddings
    kv = worker_stat(graph, "PrefillWorker", "transport_bytes_served") - kv
    assert embeddings > 0 and kv > 0, "the video prompt should be prefilled remotely"
    # The encode worker added by another test may have served nothing yet: every worker that
    # chose a transport chose NIXL, and some did.
    for component in ("EncodeWorker", "PrefillWorker", "DecodeWorker"):
        assert worker_stat(graph, component, "transport_nixl") >= 1, f"{component}: no NIXL"
        assert worker_stat(graph, component, "transport_tcp") == 0, f"{component} fell back to tcp"
    assert hosts["c"].link_bytes()[1] - encode_sent >= embeddings
    assert hosts["d"].link_bytes()[1] - prefill_sent >= kv


def test_an_encode_worker_on_a_new_host_is_picked_up_live(
    graph: SpreadGraph,
    network: Network,
    client: openai.OpenAI,
    reference: Reference,
    video: Callable[[int], Path],
) -> None:
    host = network.add_host("e")
    graph.start_worker(host, "EncodeWorker")
    graph.wait_until(
        "serving with two encode workers",
        lambda: len(graph.instances("EncodeWorker")) == 2,
        timeout_s=180,
    )
    (new,) = [i["id"] for i in graph.instances("EncodeWorker") if host.address in i["address"]]

    # Fresh videos (no embedding cache hits): once the prefill worker's watch has
    # seen the new instance, its round-robin reaches it within two requests.
    encoded_there = 0.0
    for seed in (2, 3, 4, 5):
        clip = video(seed)
        assert ask_about(client, clip) == reference.greedy("What happens?", [clip], MAX_TOKENS)
        encoded_there = worker_stats(graph, "EncodeWorker", "media_encoded").get(new, 0.0)
        if encoded_there:
            break

    assert encoded_there == 1


def probe(host: Host, component: str, graph: SpreadGraph) -> subprocess.CompletedProcess[str]:
    """The workers' Kubernetes liveness check (`deploy/k8s`), run on `host`."""
    command = [sys.executable, "-m", "runtime.probe", component, "--etcd", graph.etcd_address]
    return host.run(command, timeout_s=60)


def test_the_liveness_probe_passes_only_where_the_worker_runs(
    graph: SpreadGraph, hosts: dict[str, Host]
) -> None:
    assert probe(hosts["c"], "EncodeWorker", graph).returncode == 0

    elsewhere = probe(hosts["c"], "DecodeWorker", graph)

    assert elsewhere.returncode == 1
    assert f"no DecodeWorker registered from {hosts['c'].address}" in elsewhere.stderr
