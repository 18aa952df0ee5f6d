"""Picked ports stay out of the kernel's ephemeral range, where outgoing connections land."""

from __future__ import annotations

import socket

import pytest

from runtime import ports
from runtime.ports import _ceiling, free_ports


def test_free_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    ports = free_ports(50)
    assert len(set(ports)) == 50
    assert all(port < _ceiling() for port in ports)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[0]))


def test_a_port_in_use_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", free_ports(1)[0]))
        held.listen()
        taken = held.getsockname()[1]
        picks = iter([taken, taken, taken + 1])
        monkeypatch.setattr(ports.random, "randrange", lambda *_: next(picks))
        assert ports.free_ports(1) == [taken + 1]
