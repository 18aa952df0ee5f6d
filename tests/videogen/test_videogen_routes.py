"""The video routes answer only where the graph runs a `videos` model."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from routes.admission import Admission
from routes.app import build_app
from routes.metrics import FrontendMetrics
from routes.state import FrontendState


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/videos"),
        ("GET", "/v1/videos"),
        ("GET", "/v1/videos/video_0123"),
        ("DELETE", "/v1/videos/video_0123"),
        ("GET", "/v1/videos/video_0123/content"),
        ("POST", "/v1/videos/generations"),
    ],
)
def test_a_graph_without_a_video_model_answers_404_naming_what_it_serves(method, path) -> None:
    state = FrontendState(
        model_name="tiny",
        components={},
        model_types={"chat": "Processor"},
        request_timeout_s=5,
        admission=Admission(4),
        metrics=FrontendMetrics(),
    )
    answer = TestClient(build_app(state, max_request_bytes=1 << 20)).request(
        method, path, json={"prompt": "a cat"}
    )
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "model_type_not_served"
    assert "chat" in answer.json()["error"]["message"]
