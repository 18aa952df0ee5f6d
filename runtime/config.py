"""The graph's YAML config: one section per component, a shared `Common:` block.

    Common:                      # values any section may import by name
      model: tiny
    EncodeWorker:
      common-configs: [model]    # copy these keys from Common (the section wins on conflict)
      num-frames: 8              # validated by the component's Config model (kebab-case keys)
      router: round-robin        # how this component's clients pick instances
      ServiceArgs: {workers: 2}  # processes the supervisor starts

Command-line overrides `--Section.key=value` (the value parsed as YAML) apply
on top, and `--Section.workers=N` is short for `ServiceArgs.workers`. Every
mistake is reported at start-up, all at once, naming the file (or the
command-line flag), the section and the key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runtime.routers import RouterName

M = TypeVar("M", bound=BaseModel)

COMMON = "Common"
COMMON_CONFIGS = "common-configs"
SERVICE_ARGS = "ServiceArgs"


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class ComponentConfig(BaseModel):
    """Base of every component's `Config`: kebab-case keys in YAML, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", alias_generator=_kebab, populate_by_name=True)

    router: RouterName = "round-robin"

    def interpreter(self) -> str | None:
        """The Python that must run this component's workers, if not the supervisor's own.

        A component whose engine lives in another venv (vLLM pins its own torch)
        names that venv's interpreter here; `ServiceArgs.python` overrides it.
        """
        return None


class ServiceArgs(BaseModel):
    """How the supervisor runs a component."""

    model_config = ConfigDict(extra="forbid")

    workers: int = Field(default=1, ge=1)
    # GPUs to spread this component's workers over, one each, round-robin
    # (worker i sees only devices[i % len(devices)] as CUDA_VISIBLE_DEVICES).
    devices: list[int] | None = Field(default=None, min_length=1)
    # The interpreter that runs the workers (default: what the component's config asks for).
    python: str | None = None


@dataclass(frozen=True)
class ServiceSettings:
    """One component's validated config and how many processes run it."""

    config: ComponentConfig
    workers: int
    devices: tuple[int, ...] | None = None
    python: str | None = None

    def interpreter(self) -> str | None:
        """`ServiceArgs.python`, else the component's own choice; None: the supervisor's."""
        return self.python or self.config.interpreter()

    def device_of(self, index: int) -> int | None:
        """The GPU worker `index` is pinned to, if the section names `ServiceArgs.devices`."""
        return None if self.devices is None else self.devices[index % len(self.devices)]


class ConfigError(ValueError):
    """The config cannot be used; the message lists every problem found."""


def parse_overrides(args: Sequence[str]) -> dict[tuple[str, str], Any]:
    """`--Section.key=value` flags -> {(section, key): YAML-parsed value}."""
    overrides: dict[tuple[str, str], Any] = {}
    for arg in args:
        flag, equals, value = arg.partition("=")
        section, dot, key = flag.removeprefix("--").partition(".")
        if not arg.startswith("--") or not equals or not dot or not section or not key:
            raise ConfigError(f"cannot read {arg!r}: overrides look like --Section.key=value")
        try:
            overrides[(section, key)] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise ConfigError(f"{arg}: the value is not valid YAML ({error})") from None
    return overrides


def load_config(
    path: Path | None,
    components: Mapping[str, type[ComponentConfig]],
    overrides: Mapping[tuple[str, str], Any] | None = None,
) -> dict[str, ServiceSettings]:
    """Read `path` (or nothing), apply `overrides`, validate each section of `components`."""
    source = str(path) if path else "<no config file>"
    raw = _read_yaml(path) if path else {}
    origins: dict[tuple[str, str], str] = {}
    for (section, key), value in (overrides or {}).items():
        flag = f"--{section}.{key}"
        if key == "workers":
            section_dict = _section(raw, section, source)
            section_dict.setdefault(SERVICE_ARGS, {})["workers"] = value
            origins[(section, f"{SERVICE_ARGS}.workers")] = flag
        else:
            _section(raw, section, source)[key] = value
            origins[(section, key)] = flag

    problems = [
        f"{source}: section {name!r} is not a component of this graph "
        f"(its components: {', '.join(components)}; shared values go under {COMMON}:)"
        for name in raw
        if name != COMMON and name not in components
    ]
    common = _section(raw, COMMON, source)
    settings: dict[str, ServiceSettings] = {}
    for name, config_class in components.items():
        section = dict(_section(raw, name, source))
        imported = section.pop(COMMON_CONFIGS, None) or []
        if not isinstance(imported, list):
            problems.append(
                f"{source}: section {name!r}, key {COMMON_CONFIGS!r}: "
                "must be a list of keys under Common:, e.g. [model, device]"
            )
            imported = []
        service_args = section.pop(SERVICE_ARGS, None) or {}
        values: dict[str, Any] = {}
        for key in imported:
            if key in common:
                values[key] = common[key]
                origins.setdefault((name, key), f"{source} ({COMMON}.{key})")
            else:
                problems.append(
                    f"{source}: section {name!r}, key {COMMON_CONFIGS!r}: {key!r} is not set "
                    f"under {COMMON}: (it has {sorted(common) or 'no keys'})"
                )
        values.update(section)
        config = _validate(config_class, values, name, source, origins, problems)
        args = _validate(ServiceArgs, service_args, name, source, origins, problems, SERVICE_ARGS)
        if config is not None and args is not None:
            devices = tuple(args.devices) if args.devices else None
            settings[name] = ServiceSettings(config, args.workers, devices, args.python)
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    return settings


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data


def _section(raw: dict[str, Any], name: str, source: str) -> dict[str, Any]:
    section = raw.setdefault(name, {})
    if section is None:
        section = raw[name] = {}
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: section {name!r} must be a mapping of keys to values")
    return section


def _validate(
    model: type[M],
    values: dict[str, Any],
    section: str,
    source: str,
    origins: Mapping[tuple[str, str], str],
    problems: list[str],
    prefix: str = "",
) -> M | None:
    try:
        return model.model_validate(values)
    except ValidationError as error:
        for detail in error.errors():
            key = ".".join(str(part) for part in (prefix, *detail["loc"]) if part != "")
            where = origins.get((section, key), source)
            message = detail["msg"]
            if detail["type"] == "extra_forbidden":
                known = sorted(field.alias or name for name, field in model.model_fields.items())
                message = f"unknown key (known keys: {', '.join(known)})"
            problems.append(f"{where}: section {section!r}, key {key!r}: {message}")
        return None
