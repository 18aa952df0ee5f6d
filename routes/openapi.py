"""The OpenAPI document of the app surface, checked in as `docs/openapi.json`.

Clients generate their types from the checked-in file, so it must say what
the server does: `tests/apps/test_apps_openapi.py` fails when the app drifts
from it. After changing these routes or their bodies, rewrite it with

    python -m routes.openapi

Only the app routes (`/v1/inference/*`, `/v1/frames/*`, `/v1/health*`) and the
schemas they reference are kept; the OpenAI surface has its own document at
`/openapi.json`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from routes.admission import Admission
from routes.app import build_app
from routes.metrics import FrontendMetrics
from routes.state import FrontendState

APP_PATHS = ("/v1/inference/", "/v1/frames/", "/v1/health")
DOCUMENT = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"


def document() -> dict[str, Any]:
    """The app routes' part of the frontend's OpenAPI document."""
    state = FrontendState(
        model_name="tiny",
        components={},
        model_types={"chat": "Processor"},
        request_timeout_s=1,
        admission=Admission(1),
        metrics=FrontendMetrics(),
    )
    full = build_app(state, max_request_bytes=1 << 20).openapi()
    paths = {path: ops for path, ops in full["paths"].items() if path.startswith(APP_PATHS)}
    schemas = full["components"]["schemas"]
    kept: dict[str, Any] = {}
    pending = _references(paths)
    while pending:
        name = pending.pop()
        if name not in kept:
            kept[name] = schemas[name]
            pending |= _references(schemas[name])
    return {
        "openapi": full["openapi"],
        "info": {**full["info"], "title": "vidgraph app API"},
        "paths": paths,
        "components": {"schemas": dict(sorted(kept.items()))},
    }


def _references(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"].rsplit("/", 1)[-1]} if "$ref" in node else set()
        return found.union(*(_references(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(_references(value) for value in node))
    return set()


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    DOCUMENT.write_text(render())
    sys.stdout.write(f"wrote {DOCUMENT}\n")
