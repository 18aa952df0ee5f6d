"""The msgpack codec and the typed errors that ride on it."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from protocol import codec
from protocol.errors import DeadlineExceeded, ServiceError, WorkerLost


class Frame(BaseModel):
    index: int
    tags: list[str]


def test_dicts_round_trip_with_bytes_kept_binary() -> None:
    message = {"ids": [1, 2, 3], "raw": b"\x00\xff", "text": "é", "nested": {"ok": True}}

    decoded = codec.decode(codec.encode(message))

    assert decoded == message
    assert isinstance(decoded["raw"], bytes)


def test_pydantic_models_travel_as_their_dump() -> None:
    assert codec.decode(codec.encode({"frame": Frame(index=2, tags=["a"])})) == {
        "frame": {"index": 2, "tags": ["a"]}
    }


def test_unsupported_values_say_what_can_be_sent() -> None:
    with pytest.raises(TypeError, match="pydantic models"):
        codec.encode({"when": object()})


def test_errors_rebuild_as_the_same_class_with_the_same_fields() -> None:
    sent = ServiceError("too big", status=413, type="invalid_request_error", param="video")
    lost = WorkerLost("gone")

    received = ServiceError.from_dict(codec.decode(codec.encode(sent.to_dict())))
    received_lost = ServiceError.from_dict(lost.to_dict())

    assert type(received) is ServiceError
    assert (received.message, received.status, received.type, received.param, received.code) == (
        "too big",
        413,
        "invalid_request_error",
        "video",
        None,
    )
    assert type(received_lost) is WorkerLost
    assert received_lost.status == 503


def test_unknown_error_classes_fall_back_to_service_error() -> None:
    error = ServiceError.from_dict({"class": "FromTheFuture", "message": "m", "status": 418})

    assert type(error) is ServiceError
    assert error.status == 418


def test_wrap_keeps_service_errors_and_turns_others_into_500() -> None:
    deadline = DeadlineExceeded("late")

    assert ServiceError.wrap(deadline) is deadline
    assert deadline.status == 504
    wrapped = ServiceError.wrap(KeyError("model"))
    assert (wrapped.status, wrapped.message) == (500, "KeyError: 'model'")
