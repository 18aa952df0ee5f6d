"""Config loading: Common and common-configs, ServiceArgs, overrides, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.config import ComponentConfig, ConfigError, load_config, parse_overrides
from runtime.supervisor import Supervisor, worker_env


class WorkerConfig(ComponentConfig):
    model: str
    device: str = "cpu"
    num_frames: int = 8


class FrontConfig(ComponentConfig):
    port: int = 8000


COMPONENTS = {"Frontend": FrontConfig, "EncodeWorker": WorkerConfig}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "graph.yaml"
    path.write_text(text)
    return path


def error_of(path: Path | None, *overrides: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, COMPONENTS, parse_overrides(overrides))
    return str(caught.value)


def test_sections_import_common_values_and_service_args(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
Common: {model: tiny, device: cuda, num-frames: 4}
Frontend: {port: 9000}
EncodeWorker:
  common-configs: [model, device, num-frames]
  device: cpu
  router: least-loaded
  ServiceArgs: {workers: 2}
""",
    )
    settings = load_config(path, COMPONENTS)

    encode = settings["EncodeWorker"]
    assert encode.config == WorkerConfig(
        model="tiny", device="cpu", num_frames=4, router="least-loaded"
    )
    assert encode.workers == 2
    assert settings["Frontend"].config.port == 9000
    assert settings["Frontend"].workers == 1


def test_command_line_overrides_win_and_workers_is_a_shortcut(tmp_path: Path) -> None:
    path = write(tmp_path, "EncodeWorker: {model: tiny}\n")
    overrides = parse_overrides(
        ["--EncodeWorker.num-frames=16", "--EncodeWorker.workers=3", "--Frontend.port=8123"]
    )
    settings = load_config(path, COMPONENTS, overrides)

    assert settings["EncodeWorker"].config.num_frames == 16
    assert settings["EncodeWorker"].workers == 3
    assert settings["Frontend"].config.port == 8123


def test_unknown_key_names_file_section_key_and_the_known_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "EncodeWorker: {model: tiny, num-frame: 4}\n")

    message = error_of(path)

    assert f"{path}: section 'EncodeWorker', key 'num-frame': unknown key" in message
    assert "num-frames" in message and "router" in message


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
Common: {model: tiny}
Frontend: {port: eighty, router: fastest}
EncodeWorker: {common-configs: [model, dtype], ServiceArgs: {workers: 0}}
EncodeWoker: {model: tiny}
""",
    )
    message = error_of(path)

    assert "section 'Frontend', key 'port': Input should be a valid integer" in message
    assert "section 'Frontend', key 'router': Input should be 'round-robin'" in message
    assert "section 'EncodeWorker', key 'common-configs': 'dtype' is not set under Common:" in (
        message
    )
    assert "section 'EncodeWorker', key 'ServiceArgs.workers'" in message
    assert "section 'EncodeWoker' is not a component of this graph" in message


def test_missing_required_key_is_named(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "Frontend: {}\n"))

    assert "section 'EncodeWorker', key 'model': Field required" in message


def test_bad_override_values_name_the_flag() -> None:
    message = error_of(None, "--EncodeWorker.model=tiny", "--EncodeWorker.num-frames=[1, 2]")

    assert "--EncodeWorker.num-frames: section 'EncodeWorker', key 'num-frames'" in message


def test_malformed_override_says_the_expected_shape() -> None:
    with pytest.raises(ConfigError, match=r"--Section\.key=value"):
        parse_overrides(["--EncodeWorker.num-frames"])


def test_unreadable_or_non_mapping_files_are_reported(tmp_path: Path) -> None:
    assert "cannot read config file" in error_of(tmp_path / "missing.yaml")
    assert "top level must be a mapping" in error_of(write(tmp_path, "- a\n- b\n"))


def test_service_args_devices_pin_each_worker_to_one_gpu(tmp_path) -> None:
    path = tmp_path / "graph.yaml"
    path.write_text("Worker:\n  ServiceArgs: {workers: 5, devices: [0, 1, 2, 3]}\n")
    settings = load_config(path, {"Worker": ComponentConfig})
    assert [settings["Worker"].device_of(i) for i in range(5)] == [0, 1, 2, 3, 0]

    class Graph:
        def names(self) -> list[str]:
            return ["Worker"]

    supervisor = Supervisor("g", Graph(), settings, [], "127.0.0.1:1", "ns")
    envs = [worker_env(spec).get("CUDA_VISIBLE_DEVICES") for spec in supervisor._specs]
    assert envs == ["0", "1", "2", "3", "0"]


def test_without_devices_workers_keep_the_environment(tmp_path) -> None:
    path = tmp_path / "graph.yaml"
    path.write_text("Worker:\n  ServiceArgs: {workers: 2}\n")
    assert load_config(path, {"Worker": ComponentConfig})["Worker"].device_of(1) is None
