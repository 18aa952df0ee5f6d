"""The Kubernetes manifests under deploy/k8s, checked offline.

Each object is validated (strictly: no unknown fields) against the Kubernetes
JSON schemas that the `kubernetes-validate` package ships. The rest checks
what a schema cannot: that the pieces fit each other and this repository (the
graph's components, its config, the frontend's routes, the exported metric,
the Dockerfile's paths).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from components.frontend import FrontendConfig
from routes.app import FAMILIES
from routes.metrics import FrontendMetrics
from runtime.config import load_config
from runtime.graph import load_graph
from runtime.secret import SECRET_FILE_ENV
from runtime.worker import DRAIN_TIMEOUT_S

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"
GRAPH = "graphs.disagg"
MODEL_WORKERS = {"DecodeWorker", "PrefillWorker", "EncodeWorker"}

Object = dict[str, Any]


def manifests() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def objects(path: Path) -> list[Object]:
    return [o for o in yaml.safe_load_all(path.read_text()) if o]


def base() -> list[Object]:
    """What `kubectl apply -k deploy/k8s` creates."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [o for name in kustomization["resources"] for o in objects(K8S / name)]


def of_kind(kind: str) -> dict[str, Object]:
    return {o["metadata"]["name"]: o for o in base() if o["kind"] == kind}


def pod_labels(deployment: Object) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"]["labels"]


def container(deployment: Object) -> Object:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def worker_deployments() -> dict[str, Object]:
    """Deployments running `runtime.worker GRAPH COMPONENT`, by component."""
    found = {}
    for deployment in of_kind("Deployment").values():
        command = container(deployment)["command"]
        if command[1:3] == ["-m", "runtime.worker"]:
            assert command[3] == GRAPH
            found[command[4]] = deployment
    return found


def option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


@pytest.mark.parametrize("path", manifests(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_object_is_valid_kubernetes(path: Path) -> None:
    for obj in objects(path):
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_kustomization_names_every_manifest_but_the_optional_autoscaling() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])

    assert listed == {p.name for p in manifests() if p.parent == K8S}


def test_every_component_has_a_deployment_of_its_own() -> None:
    assert set(worker_deployments()) == set(load_graph(GRAPH).names())


def test_the_config_map_is_a_valid_config_of_the_graph_for_gpus(tmp_path: Path) -> None:
    (config_map,) = of_kind("ConfigMap").values()
    config = tmp_path / "graph.yaml"
    config.write_text(config_map["data"]["graph.yaml"])
    graph = load_graph(GRAPH)

    settings = load_config(config, {c.name: c.Config for c in graph.components})

    assert all(settings[name].config.device == "cuda" for name in MODEL_WORKERS)


def test_workers_read_the_mounted_config_and_find_etcd_through_its_service() -> None:
    (config_map,) = of_kind("ConfigMap")  # its name
    etcd = of_kind("Service")["etcd"]
    for component, deployment in worker_deployments().items():
        command = container(deployment)["command"]
        mounts = {m["name"]: m["mountPath"] for m in container(deployment)["volumeMounts"]}
        volumes = deployment["spec"]["template"]["spec"]["volumes"]
        (name,) = [v["name"] for v in volumes if v.get("configMap", {}).get("name") == config_map]

        assert option(command, "-f") == f"{mounts[name]}/graph.yaml", component
        assert option(command, "--etcd") == f"etcd:{etcd['spec']['ports'][0]['port']}", component


def test_every_process_and_etcd_hold_the_graphs_secret() -> None:
    """Internal traffic is authenticated: one Secret, mounted where VIDGRAPH_SECRET_FILE points,
    in every Deployment; etcd is started by vidgraph, which turns its auth on with it."""
    deployments = of_kind("Deployment")
    secret_names = set()
    for name, deployment in deployments.items():
        env = {e["name"]: e.get("value") for e in container(deployment)["env"]}
        mounts = {m["name"]: m["mountPath"] for m in container(deployment)["volumeMounts"]}
        volumes = deployment["spec"]["template"]["spec"]["volumes"]
        (volume,) = [v for v in volumes if "secret" in v]
        secret_names.add(volume["secret"]["secretName"])

        assert Path(env[SECRET_FILE_ENV]).parent == Path(mounts[volume["name"]]), name
    assert len(secret_names) == 1
    assert set(deployments) == {d["metadata"]["name"] for d in worker_deployments().values()} | {
        "etcd"
    }
    assert container(deployments["etcd"])["command"][1:3] == ["-m", "runtime.etcd_server"]


def test_workers_bind_everywhere_and_advertise_their_pod_ip() -> None:
    for component, deployment in worker_deployments().items():
        env = {e["name"]: e for e in container(deployment)["env"]}

        assert env["VIDGRAPH_HOST"]["value"] == "0.0.0.0", component
        assert env["VIDGRAPH_ADVERTISE_ADDRESS"]["valueFrom"]["fieldRef"] == {
            "fieldPath": "status.podIP"
        }, component


def test_each_model_worker_gets_one_gpu_and_every_container_asks_for_resources() -> None:
    for component, deployment in worker_deployments().items():
        resources = container(deployment)["resources"]
        gpus = resources.get("limits", {}).get("nvidia.com/gpu")

        assert {"cpu", "memory"} <= set(resources["requests"]), component
        assert gpus == (1 if component in MODEL_WORKERS else None), component


def test_selectors_match_their_pods_and_services_find_a_named_port() -> None:
    deployments = of_kind("Deployment")
    for deployment in deployments.values():
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels(deployment).items()
    for name, service in of_kind("Service").items():
        selector = service["spec"]["selector"]
        (target,) = [d for d in deployments.values() if selector.items() <= pod_labels(d).items()]
        ports = {p["name"] for p in container(target)["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports, name


def test_frontend_probes_are_routes_of_the_frontend() -> None:
    frontend = container(worker_deployments()["Frontend"])
    routes = {route.path for family in FAMILIES for route in family.router.routes}
    ports = {p["name"]: p["containerPort"] for p in frontend["ports"]}

    for probe in ("readinessProbe", "livenessProbe"):
        assert frontend[probe]["httpGet"]["path"] in routes
        assert ports[frontend[probe]["httpGet"]["port"]] == FrontendConfig().port


def test_worker_probes_check_the_workers_own_component() -> None:
    workers = {c: d for c, d in worker_deployments().items() if c != "Frontend"}
    for component, deployment in workers.items():
        worker = container(deployment)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            command = worker[probe]["exec"]["command"]
            assert command[:4] == [worker["command"][0], "-m", "runtime.probe", component]
            assert option(command, "--etcd") == option(worker["command"], "--etcd")


def test_pods_outlive_the_workers_drain() -> None:
    for component, deployment in worker_deployments().items():
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > DRAIN_TIMEOUT_S, component


def test_every_vidgraph_container_runs_the_dockerfiles_image() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    workdir = re.search(r"^WORKDIR (\S+)", dockerfile, flags=re.M).group(1)
    tag = re.search(r"docker build -t (\S+)", dockerfile).group(1)
    for component, deployment in worker_deployments().items():
        worker = container(deployment)

        assert worker["image"] == tag, component
        assert worker["command"][0] == f"{workdir}/.venv/bin/python", component


def test_the_autoscaler_scales_encode_workers_on_a_metric_the_frontend_exports() -> None:
    (hpa,) = objects(K8S / "autoscaling" / "encode-hpa.yaml")
    (adapter,) = objects(K8S / "autoscaling" / "prometheus-adapter-rules.yaml")
    (rule,) = yaml.safe_load(adapter["data"]["config.yaml"])["externalRules"]
    metric, matchers = re.fullmatch(r"(\w+)\{(.*)\}", rule["seriesQuery"]).groups()
    body, _ = FrontendMetrics().render({"EncodeWorker": {"a1": {"inflight": 3.0}}})
    (exported,) = [line for line in body.decode().splitlines() if line.startswith(metric + "{")]

    assert hpa["spec"]["scaleTargetRef"]["name"] == "encode-worker"
    assert worker_deployments()["EncodeWorker"]["metadata"]["name"] == "encode-worker"
    assert hpa["spec"]["metrics"][0]["external"]["metric"]["name"] == rule["name"]["as"]
    assert all(matcher in exported for matcher in matchers.split(","))
    assert exported.endswith(" 3.0")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_kustomize_renders_the_same_objects() -> None:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, check=True
    ).stdout
    names = {(o["kind"], o["metadata"]["name"]) for o in yaml.safe_load_all(rendered)}

    assert names == {(o["kind"], o["metadata"]["name"]) for o in base()}


def test_the_qwen3_vl_overlay_swaps_in_a_valid_gpu_config_and_keeps_the_rest(
    tmp_path: Path,
) -> None:
    overlay = K8S / "qwen3-vl-8b"
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["../"]
    assert kustomization["patches"] == [{"path": "config.yaml"}]
    (patch,) = objects(overlay / "config.yaml")
    assert (patch["kind"], patch["metadata"]["name"]) == ("ConfigMap", "vidgraph-config")
    config = tmp_path / "graph.yaml"
    config.write_text(patch["data"]["graph.yaml"])
    graph = load_graph(GRAPH)

    settings = load_config(config, {c.name: c.Config for c in graph.components})

    assert all(settings[name].config.device == "cuda" for name in MODEL_WORKERS)
    assert settings["DecodeWorker"].config.model == "Qwen/Qwen3-VL-8B-Instruct"
