"""Typed errors that cross process boundaries.

A handler anywhere in the graph raises `ServiceError` (or a subclass); the
request plane carries it to the caller as an error frame and raises the same
class with the same fields there, so the frontend can turn any failure into an
OpenAI error body without guessing. The fields mirror that body: `message`,
`type`, `param`, `code`, plus the HTTP `status` the frontend should answer with.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ServiceError(Exception):
    """A failure a caller should see, with the HTTP status it maps to."""

    default_status: ClassVar[int] = 500
    default_type: ClassVar[str] = "server_error"
    _by_name: ClassVar[dict[str, type[ServiceError]]] = {}

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status if status is not None else self.default_status
        self.type = type if type is not None else self.default_type
        self.param = param
        self.code = code

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Registered by name so an error frame can rebuild the exact class on
        # the caller's side, as long as both processes import the subclass.
        super().__init_subclass__(**kwargs)
        ServiceError._by_name[cls.__name__] = cls

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status}, type={self.type!r})"

    def to_dict(self) -> dict[str, Any]:
        """The error frame's body."""
        return {
            "class": type(self).__name__,
            "message": self.message,
            "status": self.status,
            "type": self.type,
            "param": self.param,
            "code": self.code,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServiceError:
        """Rebuild the error a remote handler raised; unknown classes become `ServiceError`."""
        error_class = ServiceError._by_name.get(data.get("class", ""), ServiceError)
        return error_class(
            data.get("message", "unknown error"),
            status=data.get("status"),
            type=data.get("type"),
            param=data.get("param"),
            code=data.get("code"),
        )

    @classmethod
    def wrap(cls, error: BaseException) -> ServiceError:
        """Any exception as a `ServiceError`: typed ones pass through, others become a 500."""
        if isinstance(error, ServiceError):
            return error
        return ServiceError(f"{type(error).__name__}: {error}")


class WorkerLost(ServiceError):
    """The instance serving the request died, left, or could not be reached; retry elsewhere."""

    default_status = 503
    default_type = "service_unavailable"


class NoInstances(ServiceError):
    """No live instance serves the endpoint (yet); the graph is starting or scaled to zero."""

    default_status = 503
    default_type = "service_unavailable"


class DeadlineExceeded(ServiceError):
    """The request ran out of time; the remote work has been cancelled."""

    default_status = 504
    default_type = "timeout"
