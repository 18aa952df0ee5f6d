"""One trace per request, across every process it touches (OpenTelemetry).

Off unless OpenTelemetry's own environment names a collector: set
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (or `OTEL_EXPORTER_OTLP_ENDPOINT`) before
`vidgraph serve`, as for Dynamo or any service instrumented with OTel, and every
worker, which inherits the supervisor's environment, exports its spans over
OTLP/HTTP as `vidgraph.<Component>`. The other `OTEL_*` variables (batch delay,
headers, resource attributes) apply as the SDK documents them.

The context travels in W3C `traceparent` form: from the HTTP client's headers
into the frontend, and from caller to worker in every request-plane REQUEST
frame, so a worker's span is a child of its caller's. Off, a span is a shared
no-op and the frame's context is empty: the request plane's hot path pays
nothing for what it does not export.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext

from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind

ENDPOINT_ENVS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")

_tracer = trace.get_tracer("vidgraph")
_OFF: AbstractContextManager[Span] = nullcontext(trace.INVALID_SPAN)
_exporting = False


def configure(component: str) -> Callable[[], None]:
    """Export this process's spans when a collector is named; returns the flush for exit."""
    global _exporting
    if not any(os.environ.get(name) for name in ENDPOINT_ENVS):
        return lambda: None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    service = {"service.name": f"vidgraph.{component}", "process.pid": os.getpid()}
    provider = TracerProvider(resource=Resource.create(service))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _exporting = True
    return provider.shutdown


def carrier() -> dict[str, str]:
    """The current trace context as headers (empty outside any trace), for a request frame."""
    headers: dict[str, str] = {}
    if not _exporting:
        return headers
    propagate.inject(headers)
    return headers


def span(
    name: str,
    parent: Mapping[str, str] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    **attributes: str | int | float,
) -> AbstractContextManager[Span]:
    """A span around the block; `parent`: a caller's `carrier()`, else the current span."""
    if not _exporting:
        return _OFF
    return _exported_span(name, parent, kind, attributes)


@contextmanager
def _exported_span(
    name: str,
    parent: Mapping[str, str] | None,
    kind: SpanKind,
    attributes: Mapping[str, str | int | float],
) -> Iterator[Span]:
    context = None
    if parent is not None:  # from another process: only text headers mean anything
        headers = {k: v for k, v in parent.items() if isinstance(k, str) and isinstance(v, str)}
        context = propagate.extract(headers)
    with _tracer.start_as_current_span(
        name, context=context, kind=kind, attributes=attributes
    ) as current:
        yield current
