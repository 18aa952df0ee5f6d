"""Authenticated internal traffic: one shared secret admits a process to the graph.

Off unless `VIDGRAPH_SECRET_FILE` names a file (a Kubernetes Secret mounted as
one; `vidgraph serve --secret-file` sets it for the workers it starts). Every
process of the graph reads the same file and derives from it:

- one CurveZMQ key pair, the same in every process. Workers serve with it and
  admit only callers that present its public key (checked by a ZAP handler
  thread); callers connect with it. Each request-plane link is then
  authenticated and encrypted, and a process without the secret completes no
  handshake: nothing it sends reaches a handler.
- etcd credentials (user `root`). An etcd that vidgraph starts with the secret
  enables auth with them, so a process without the secret can neither register
  nor list instances.

Not covered: NIXL/UCX transfers carry no authentication of their own (they
read buffers named in request-plane replies, which the secret protects), and
etcd is reached over plain gRPC: on a network you do not trust, give etcd its
own TLS as well.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.auth.thread
from zmq.utils import z85

SECRET_FILE_ENV = "VIDGRAPH_SECRET_FILE"
ETCD_USER = "root"  # etcd will enable auth only with a root user holding the root role
MIN_SECRET_BYTES = 16

_authenticators: dict[int, zmq.auth.thread.ThreadAuthenticator] = {}
_authenticators_lock = threading.Lock()


@dataclass(frozen=True)
class GraphSecret:
    """What a process holding the graph's secret proves itself with."""

    curve_secret_key: bytes = field(repr=False)
    curve_public_key: bytes
    etcd_password: str = field(repr=False)

    @classmethod
    def from_bytes(cls, secret: bytes) -> GraphSecret:
        secret = secret.strip()
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(
                f"the graph secret is {len(secret)} bytes; use at least {MIN_SECRET_BYTES} "
                "random ones, e.g. `head -c 32 /dev/urandom | base64 > secret`"
            )
        curve_secret = z85.encode(_derive(b"curve", secret))
        return cls(
            curve_secret_key=curve_secret,
            curve_public_key=zmq.curve_public(curve_secret),
            etcd_password=_derive(b"etcd", secret).hex(),
        )

    @classmethod
    def from_file(cls, path: str | Path) -> GraphSecret:
        try:
            return cls.from_bytes(Path(path).read_bytes())
        except OSError as error:
            raise ValueError(f"cannot read the graph secret from {path}: {error}") from None

    @classmethod
    def from_env(cls) -> GraphSecret | None:
        """The secret `VIDGRAPH_SECRET_FILE` names, or None when it names none."""
        path = os.environ.get(SECRET_FILE_ENV)
        return cls.from_file(path) if path else None

    def serve_on(self, socket: zmq.Socket) -> None:
        """Make `socket` (before it binds) a CURVE server that admits only this secret's key."""
        _authenticate_in(socket.context, self.curve_public_key)
        socket.curve_secretkey = self.curve_secret_key
        socket.curve_publickey = self.curve_public_key
        socket.curve_server = True

    def call_on(self, socket: zmq.Socket) -> None:
        """Make `socket` (before it connects) a CURVE client of workers holding this secret."""
        socket.curve_serverkey = self.curve_public_key
        socket.curve_secretkey = self.curve_secret_key
        socket.curve_publickey = self.curve_public_key


def _derive(purpose: bytes, secret: bytes) -> bytes:
    """A 32-byte key for one purpose: knowing one derived key reveals no other."""
    return hashlib.sha256(b"vidgraph\0" + purpose + b"\0" + secret).digest()


class _OnlyKey:
    """pyzmq's credentials provider: admits exactly one client public key."""

    def __init__(self, public_key: bytes) -> None:
        self.public_key = public_key

    def callback(self, domain: str, key: bytes) -> bool:
        return key == self.public_key


def _authenticate_in(context: zmq.Context, public_key: bytes) -> None:
    """Start the ZAP handler of `context` (once): without one, libzmq admits any CURVE key.

    It runs on its own thread, so handshakes are answered while the event loop is busy.
    """
    with _authenticators_lock:
        authenticator = _authenticators.get(context.underlying)
        if authenticator is None:
            authenticator = zmq.auth.thread.ThreadAuthenticator(
                zmq.Context.shadow(context.underlying)
            )
            authenticator.start()
            _authenticators[context.underlying] = authenticator
        authenticator.configure_curve_callback("*", _OnlyKey(public_key))
