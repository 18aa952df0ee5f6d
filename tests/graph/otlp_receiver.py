"""A stand-in for an OpenTelemetry collector: takes OTLP/HTTP trace exports and keeps the spans.

Real exporters post to it (each graph process's `OTLPSpanExporter`, protobuf over
HTTP, as to any collector); it decodes them with OpenTelemetry's own protobuf
classes, so a test reads back what a collector would have received.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    pid: int
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root


class OtlpReceiver:
    def __init__(self, server: ThreadingHTTPServer) -> None:
        self._server = server
        self._spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1/traces"

    def spans(self, trace_id: str) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self._spans if s.trace_id == trace_id]

    def keep(self, export: ExportTraceServiceRequest) -> None:
        received = []
        for resource_spans in export.resource_spans:
            attributes = {a.key: a.value for a in resource_spans.resource.attributes}
            service = attributes["service.name"].string_value
            pid = attributes["process.pid"].int_value
            for scope_spans in resource_spans.scope_spans:
                received += [
                    ReceivedSpan(
                        service,
                        pid,
                        span.name,
                        span.trace_id.hex(),
                        span.span_id.hex(),
                        span.parent_span_id.hex(),
                    )
                    for span in scope_spans.spans
                ]
        with self._lock:
            self._spans += received


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """A sender killed mid-export (the fault tests do that) drops its connection: not news."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextmanager
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """A receiver on a free loopback port, serving until the block ends."""
    receiver: OtlpReceiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            export = ExportTraceServiceRequest()
            try:
                export.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
            except (DecodeError, TypeError, ValueError):
                # A worker the tests kill mid-export leaves a cut-off body; a collector refuses it.
                self.send_error(400, "not a whole OTLP trace export")
                return
            receiver.keep(export)
            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib's name)
            pass  # one line per export would flood the test's output

    server = QuietServer(("127.0.0.1", 0), Handler)
    receiver = OtlpReceiver(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
