"""Declaring a component: a class with a `Config`, a `start()`, and `@endpoint`s.

    class EncodeWorker(Component):
        Config = EncodeWorkerConfig

        async def start(self) -> None:
            self.model = load(self.config.model)

        @endpoint
        async def encode(self, request: dict, ctx: Context) -> AsyncIterator[dict]:
            yield {...}

Each worker process builds one instance, calls `start()`, then registers its
endpoints so that no request arrives before the model is loaded.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar, TypeVar

from runtime.client import Client
from runtime.config import ComponentConfig
from runtime.distributed import DistributedRuntime
from runtime.graph import Graph
from runtime.routers import RouterName
from runtime.server import Context

EndpointMethod = TypeVar("EndpointMethod", bound=Callable[..., AsyncIterator[Any]])


def endpoint(method: EndpointMethod) -> EndpointMethod:
    """Mark an async-generator method `(self, request, ctx)` as a remotely callable endpoint."""
    if not inspect.isasyncgenfunction(method):
        raise TypeError(
            f"endpoint {method.__qualname__} must be an async generator (`async def` that "
            "`yield`s its replies); yield once for a single reply"
        )
    method.__vidgraph_endpoint__ = True  # type: ignore[attr-defined]
    return method


class Component:
    """Base class of the graph's services; one instance per worker process."""

    Config: ClassVar[type[ComponentConfig]] = ComponentConfig
    name: ClassVar[str]
    endpoints: ClassVar[tuple[str, ...]] = ()
    model_type: ClassVar[str | None] = None
    """The kind of model this component serves to the frontend's routes ("chat", "videos")."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not issubclass(cls.Config, ComponentConfig):
            raise TypeError(
                f"{cls.__name__}.Config must subclass runtime.ComponentConfig (kebab-case keys, "
                f"unknown keys refused, `router:`); {cls.Config.__name__} does not"
            )
        if "name" not in cls.__dict__:
            cls.name = cls.__name__
        cls.endpoints = tuple(
            name
            for name, member in inspect.getmembers(cls)
            if getattr(member, "__vidgraph_endpoint__", False)
        )

    def __init__(self, config: ComponentConfig, runtime: DistributedRuntime, graph: Graph):
        self.config = config
        self.runtime = runtime
        self.graph = graph

    @classmethod
    def link(cls, component: type[Component]) -> Graph:
        """Start a graph in which this component calls `component`."""
        return Graph(cls).link(component)

    async def start(self) -> None:
        """Load models, open clients; runs once per process before any request arrives."""

    async def run(self) -> None:
        """Work besides the endpoints (e.g. an HTTP server); by default, none.

        Starts after registration. Returning ends only this work; raising stops
        the process (the supervisor restarts it). On shutdown `stop()` should
        make it return (a frontend sets uvicorn's `should_exit`); after a grace
        period it is cancelled.
        """

    async def stop(self) -> None:
        """Release resources; called on shutdown after in-flight requests have finished."""

    def model_card(self) -> dict[str, Any] | None:
        """The model this instance serves, registered with it in etcd; None if it serves none.

        `{"name": ..., "type": "chat" | "videos", ...}`: the frontend finds what
        the graph serves, and mounts the routes for each type, from these cards.
        Called after `start()`.
        """
        return None

    def capacity(self) -> int | None:
        """How many requests this instance runs at once, registered with it in etcd.

        A frontend left without a `max-inflight` admits as many requests as its
        graph's live instances report together (a decode worker: its engine's
        max-num-seqs), so requests beyond them wait in the frontend's bounded
        queue rather than in an engine's unbounded one. None: it sets no such
        bound. Called after `start()`.
        """
        return None

    def stats(self) -> dict[str, float]:
        """Counters for the frontend's /metrics; the runtime adds `inflight`."""
        return {}

    def client(self, component: type[Component] | str, router: RouterName | None = None) -> Client:
        """A client for another component, routing by this component's `router:` unless given."""
        name = component if isinstance(component, str) else component.name
        return self.runtime.client(name, router or self.config.router)

    def handlers(self) -> dict[str, Callable[[Any, Context], AsyncIterator[Any]]]:
        """This instance's endpoints by name, as bound methods."""
        return {name: getattr(self, name) for name in self.endpoints}
