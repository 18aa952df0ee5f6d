"""Where a worker listens and what it advertises: the per-host settings, without namespaces."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from components.model_worker import ModelWorkerConfig, open_transport
from runtime import ConfigError
from runtime.worker import ADVERTISE_ENV, Address, resolve_address
from transport import Connector


def test_a_concrete_host_is_advertised_as_bound() -> None:
    assert resolve_address("10.0.0.7", None) == Address("10.0.0.7", "10.0.0.7")


def test_an_explicit_advertise_address_wins() -> None:
    assert resolve_address("0.0.0.0", "10.0.0.8") == Address("0.0.0.0", "10.0.0.8")


def test_a_wildcard_advertises_what_the_host_name_resolves_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(socket, "gethostbyname", lambda name: "10.0.0.9")

    assert resolve_address("0.0.0.0", None) == Address("0.0.0.0", "10.0.0.9")


def test_a_wildcard_whose_host_name_is_loopback_asks_for_an_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(socket, "gethostbyname", lambda name: "127.0.1.1")

    with pytest.raises(ConfigError, match=f"set --advertise-address or {ADVERTISE_ENV}"):
        resolve_address("0.0.0.0", None)


@pytest.fixture
def fresh_connector() -> Iterator[None]:
    """No process-wide connector before the test, none left after it.

    Tests that run an in-process worker leave the process-wide connector open, and test
    order is random: close such a leftover rather than depend on running first.
    """
    if Connector._instance is not None:
        Connector._instance.close()
    yield
    if Connector._instance is not None:
        Connector._instance.close()


@pytest.mark.usefixtures("fresh_connector")
def test_the_tcp_transport_listens_where_the_worker_is_advertised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ADVERTISE_ENV, "10.0.0.7")

    assert open_transport(ModelWorkerConfig(transport="tcp")).host == "10.0.0.7"


@pytest.mark.usefixtures("fresh_connector")
def test_transport_host_overrides_the_advertised_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ADVERTISE_ENV, "10.0.0.7")
    config = ModelWorkerConfig(transport="tcp", transport_host="10.1.0.7")

    assert open_transport(config).host == "10.1.0.7"
