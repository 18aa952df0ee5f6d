"""The distributed runtime the graph's components run on.

Declaring a component (one instance per worker process)::

    from runtime import Component, ComponentConfig, Context, endpoint

    class EncodeWorkerConfig(ComponentConfig):    # YAML section, kebab-case keys
        num_frames: int = 8                       # `router:` is inherited

    class EncodeWorker(Component):
        Config = EncodeWorkerConfig
        async def start(self) -> None: ...        # load the model; before registration
        @endpoint
        async def encode(self, request: dict, ctx: Context) -> AsyncIterator[dict]:
            yield {...}                           # stream any number of replies
        def stats(self) -> dict[str, float]: ...  # served by the built-in `__stats__`

Calling another component from `start()` or a handler::

    encoders = self.client(EncodeWorker)          # routed by this section's `router:`
    async for reply in encoders.stream("encode", request, deadline_s=ctx.time_left()):
        ...                                       # break / aclose() cancels remotely
    reply = await encoders.call("encode", request)          # exactly one reply
    encoders.instances()                          # live, from the etcd watch
    encoders.stream(..., instance_id=chosen)      # a given instance, bypassing the router
    await encoders.collect_stats()                # {instance_id: stats() + inflight}

A component with its own server (the frontend) runs it in `run()` and makes it
return in `stop()`; the runtime owns SIGTERM/SIGINT, so disable uvicorn's own
signal capture. The graph's other components: `self.graph.names()`; the
graph's first component is its entry point.

Failures arrive as `protocol.errors.ServiceError` subclasses: whatever the
handler raised (other exceptions become status 500), `WorkerLost` (503, the
instance died or left), `NoInstances` (503), `DeadlineExceeded` (504).

A graph (`graphs/agg.py`) is one line; `vidgraph serve graphs.agg -f configs/agg.yaml`
runs it::

    graph = Frontend.link(Processor).link(DecodeWorker).link(EncodeWorker)

Outside a worker (tests, benchmarks, scripts)::

    runtime = await DistributedRuntime.connect("127.0.0.1:2379", namespace="default")
    client = runtime.client("EncodeWorker", router="least-loaded")
"""

from protocol.errors import DeadlineExceeded, NoInstances, ServiceError, WorkerLost
from runtime.client import Client
from runtime.component import Component, endpoint
from runtime.config import ComponentConfig, ConfigError
from runtime.discovery import Instance
from runtime.distributed import DistributedRuntime
from runtime.graph import Graph
from runtime.server import Context

__all__ = [
    "Client",
    "Component",
    "ComponentConfig",
    "ConfigError",
    "Context",
    "DeadlineExceeded",
    "DistributedRuntime",
    "Graph",
    "Instance",
    "NoInstances",
    "ServiceError",
    "WorkerLost",
    "endpoint",
]
