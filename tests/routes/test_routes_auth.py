"""The API key guards every `/v1/` route, including routes added after this test was written.

The routes are enumerated from the app itself, so a new family is covered the
moment it is included in `routes.app.FAMILIES`; a route outside `/v1/` must be
named here as deliberately open.
"""

from __future__ import annotations

import re

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from routes.admission import Admission
from routes.app import build_app
from routes.metrics import FrontendMetrics
from routes.state import FrontendState

KEY = "sk-routes-test"
# Open on purpose: probes and metrics (load balancers and Prometheus hold no key),
# the web page and FastAPI's own documentation.
OPEN = {"/live", "/health", "/metrics", "/", "/openapi.json", "/docs", "/docs/oauth2-redirect"}
OPEN |= {"/redoc", "/assets/{name}"}


def keyed_app() -> TestClient:
    state = FrontendState(
        model_name="tiny",
        components={},
        model_types={},
        request_timeout_s=5,
        admission=Admission(4),
        metrics=FrontendMetrics(),
    )
    return TestClient(build_app(state, api_key=KEY, max_request_bytes=1 << 20))


def routes() -> list[tuple[str, str]]:
    """(method, path) of every route the app serves, included routers and mounts as well."""
    return sorted(
        (method, route.path)
        for route in iter_route_contexts(keyed_app().app.routes)
        for method in getattr(route, "methods", None) or {"GET"}
        if method != "HEAD"
    )


def test_every_route_is_under_v1_or_deliberately_open() -> None:
    assert {path for _, path in routes() if not path.startswith("/v1/")} <= OPEN


def test_the_enumeration_finds_the_routes_of_included_families() -> None:
    assert {("POST", "/v1/chat/completions"), ("GET", "/v1/models")} <= set(routes())


@pytest.mark.parametrize(("method", "path"), [r for r in routes() if r[1].startswith("/v1/")])
def test_a_v1_route_without_the_key_is_401(method: str, path: str) -> None:
    client = keyed_app()
    url = re.sub(r"\{[^}]+\}", "x", path)  # path parameters get any value
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        refused = client.request(method, url, headers=headers, json={})
        assert refused.status_code == 401, (method, path, headers)
        assert refused.headers["www-authenticate"] == "Bearer"
        assert refused.json()["error"]["code"] == "invalid_api_key"
