"""A graph: which components run, and who calls whom.

    graph = Frontend.link(Processor).link(DecodeWorker).link(EncodeWorker)

`link` chains from the last component added, so a pipeline reads left to
right. The first component is the graph's entry point (the one clients talk
to). `vidgraph serve graphs.agg` imports the module and serves the one
`Graph` it defines.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runtime.component import Component


class Graph:
    """Components in the order they were linked, and the caller -> callee edges."""

    def __init__(self, root: type[Component]) -> None:
        self.components: list[type[Component]] = [root]
        self.edges: list[tuple[type[Component], type[Component]]] = []
        self._tail = root

    @property
    def root(self) -> type[Component]:
        """The entry point: the first component."""
        return self.components[0]

    def link(self, component: type[Component]) -> Graph:
        """Let the last component added call `component`; returns the graph to keep chaining."""
        self.edges.append((self._tail, component))
        if component not in self.components:
            self.components.append(component)
        self._tail = component
        return self

    def __getitem__(self, name: str) -> type[Component]:
        for component in self.components:
            if component.name == name:
                return component
        raise KeyError(f"no component {name!r} in this graph; it has {self.names()}")

    def names(self) -> list[str]:
        return [component.name for component in self.components]


class GraphError(ValueError):
    """The graph module cannot be found or does not define exactly one graph."""


def load_graph(module_path: str) -> Graph:
    """Import `module_path` (e.g. `graphs.agg`) and return the one Graph it defines."""
    try:
        module = importlib.import_module(module_path)
    except ModuleNotFoundError as error:
        if error.name is None or not module_path.startswith(error.name):
            raise  # the graph exists but imports something missing: show the traceback
        raise GraphError(
            f"no graph module {module_path!r} importable from {Path.cwd()}; "
            "run from the project directory or check the name (e.g. graphs.agg)"
        ) from None
    graphs = [value for value in vars(module).values() if isinstance(value, Graph)]
    if len(graphs) != 1:
        raise GraphError(
            f"{module_path} defines {len(graphs)} graphs; it must define exactly one, "
            "e.g. `graph = Frontend.link(Processor).link(Worker)`"
        )
    return graphs[0]
