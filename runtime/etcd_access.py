"""How to reach etcd: its address and, when the graph has a secret, the credentials it asks for."""

from __future__ import annotations

from dataclasses import dataclass, field

import aetcd

from runtime.secret import ETCD_USER, GraphSecret


@dataclass(frozen=True)
class EtcdAccess:
    host: str
    port: int
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, address: str, secret: GraphSecret | None = None) -> EtcdAccess:
        """`host:port` (as `--etcd` takes it), with an error that says what is expected."""
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"etcd address {address!r} is not HOST:PORT (e.g. 127.0.0.1:2379)")
        return cls(host, int(port), secret.etcd_password if secret else None)

    def client(self, timeout_s: int) -> aetcd.Client:
        """A new client; it authenticates as it connects, when there are credentials."""
        return aetcd.Client(
            host=self.host,
            port=self.port,
            username=ETCD_USER if self.password else None,
            password=self.password,
            timeout=timeout_s,
        )
