"""`python -m runtime.probe COMPONENT --etcd HOST:PORT`: is this host's worker alive?

Workers have no HTTP port for Kubernetes to probe, so an exec probe runs this
beside the worker. It passes when every instance of COMPONENT registered from
this host's advertised address (the same `--host`/`--advertise-address` and
environment as the worker's) answers a stats request within the timeout. That
is registration (start-up done, lease alive) plus an event loop that still
serves requests; a worker that is up but wedged fails it. Exits 0, or 1 with
the reason on stderr, where `kubectl describe pod` shows it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from protocol.errors import ServiceError
from runtime.client import STATS_ENDPOINT
from runtime.config import ConfigError
from runtime.distributed import DistributedRuntime
from runtime.worker import ADVERTISE_ENV, HOST_ENV, LOOPBACK, resolve_address


async def check(etcd: str, namespace: str, component: str, address: str, timeout_s: float) -> None:
    """Raises `ServiceError` (or `ConnectionError` for etcd) unless the instances answer."""
    runtime = await DistributedRuntime.connect(etcd, namespace)
    try:
        client = runtime.client(component)
        await client.wait_for_instances(1, timeout_s)
        mine = [i for i in client.instances() if i.host == address]
        if not mine:
            others = sorted({i.host for i in client.instances()})
            raise ServiceError(f"no {component} registered from {address} (only from {others})")
        for instance in mine:
            await client.call(
                STATS_ENDPOINT, None, instance_id=instance.instance_id, deadline_s=timeout_s
            )
    finally:
        await runtime.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m runtime.probe", description=__doc__)
    parser.add_argument("component", help="component name, e.g. EncodeWorker")
    parser.add_argument("--etcd", required=True, help="etcd HOST:PORT")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--host", default=os.environ.get(HOST_ENV, LOOPBACK))
    parser.add_argument("--advertise-address", default=os.environ.get(ADVERTISE_ENV))
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to answer")
    args = parser.parse_args()
    try:
        address = resolve_address(args.host, args.advertise_address).advertise
        asyncio.run(check(args.etcd, args.namespace, args.component, address, args.timeout))
    except (ConfigError, ConnectionError, ServiceError) as error:
        sys.exit(f"{args.component} on this host is not live: {error}")


if __name__ == "__main__":
    main()
