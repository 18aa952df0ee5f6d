"""`engine:` per worker: its YAML, and the interpreter the supervisor starts each worker with."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from components.model_worker import VLLM_PYTHON, VLLM_PYTHON_ENV
from runtime.config import ConfigError, load_config
from runtime.graph import load_graph
from runtime.supervisor import Supervisor

ROOT = Path(__file__).resolve().parents[2]


def settings_of(graph: str, text: str, tmp_path: Path) -> dict:
    path = tmp_path / "graph.yaml"
    path.write_text(text)
    return load_config(path, {c.name: c.Config for c in load_graph(graph).components})


def commands(graph: str, settings: dict) -> dict[str, tuple[str, ...]]:
    supervisor = Supervisor(graph, load_graph(graph), settings, [], "127.0.0.1:1", "ns")
    return {spec.component: spec.command for spec in supervisor._specs}


@pytest.mark.parametrize("name", ["agg-vllm", "disagg-vllm"])
def test_the_vllm_configs_run_prefill_and_decode_on_vllm_and_the_rest_natively(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(VLLM_PYTHON_ENV, raising=False)
    graph = "graphs.disagg" if name.startswith("disagg") else "graphs.agg"
    settings = load_config(
        ROOT / "configs" / f"{name}.yaml",
        {c.name: c.Config for c in load_graph(graph).components},
    )
    vllm_workers = {"DecodeWorker", "PrefillWorker"} & set(settings)

    assert all(settings[w].config.engine == "vllm" for w in vllm_workers)
    assert all(settings[w].config.vllm_args["enforce-eager"] for w in vllm_workers)
    if VLLM_PYTHON.exists():
        for component, command in commands(graph, settings).items():
            python = str(VLLM_PYTHON) if component in vllm_workers else sys.executable
            assert command[:3] == (python, "-m", "runtime.worker"), component


def test_engine_defaults_to_native_and_service_args_python_picks_any_interpreter(
    tmp_path: Path,
) -> None:
    settings = settings_of(
        "graphs.agg",
        f"DecodeWorker:\n  ServiceArgs: {{python: {sys.executable}}}\n",
        tmp_path,
    )

    assert settings["DecodeWorker"].config.engine == "native"
    assert settings["DecodeWorker"].interpreter() == sys.executable
    assert settings["EncodeWorker"].interpreter() is None


def test_vllm_args_pass_through_and_a_missing_vllm_venv_is_named_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nowhere" / "python"
    monkeypatch.setenv(VLLM_PYTHON_ENV, str(missing))
    args = {"tensor-parallel-size": 2, "quantization": "fp8"}
    text = yaml.safe_dump({"DecodeWorker": {"engine": "vllm", "vllm-args": args}})
    settings = settings_of("graphs.agg", text, tmp_path)

    assert settings["DecodeWorker"].config.vllm_args == args
    with pytest.raises(ConfigError, match=r"'DecodeWorker'.*nowhere/python.*make install-vllm"):
        commands("graphs.agg", settings)


def test_an_unknown_engine_is_refused_naming_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'DecodeWorker', key 'engine'.*'native' or 'vllm'"):
        settings_of("graphs.agg", "DecodeWorker:\n  engine: sglang\n", tmp_path)


def test_the_vllm_overlay_of_the_kubernetes_manifests_runs_a_valid_vllm_config(
    tmp_path: Path,
) -> None:
    overlay = yaml.safe_load((ROOT / "deploy" / "k8s" / "vllm" / "kustomization.yaml").read_text())
    ops = {p["target"]["name"]: yaml.safe_load(p["patch"])[0] for p in overlay["patches"]}
    settings = settings_of("graphs.disagg", ops["vidgraph-config"]["value"], tmp_path)

    for worker in ("decode-worker", "prefill-worker"):
        assert ops[worker]["value"] == "/app/.venv-vllm/bin/python"
    assert {settings[w].config.engine for w in ("DecodeWorker", "PrefillWorker")} == {"vllm"}
    assert settings["EncodeWorker"].config.device == "cuda"
