"""`docs/openapi.json` is what the app serves: regenerate it with `python -m routes.openapi`."""

from __future__ import annotations

import json

from routes.openapi import DOCUMENT, render


def test_the_checked_in_openapi_document_matches_the_app() -> None:
    assert DOCUMENT.exists(), "docs/openapi.json is missing: run `python -m routes.openapi`"
    assert json.loads(DOCUMENT.read_text()) == json.loads(render()), (
        "the app's routes drifted from docs/openapi.json; run `python -m routes.openapi` "
        "and commit the result"
    )


def test_the_document_describes_every_app_route_and_the_upload_form() -> None:
    paths = json.loads(render())["paths"]
    assert {
        "/v1/inference/url",
        "/v1/inference/upload",
        "/v1/health",
        "/v1/health/detailed",
    } <= set(paths)
    form = paths["/v1/inference/upload"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert form["schema"]["properties"]["video"] == {
        "type": "string",
        "format": "binary",
        "description": "the video file",
    }
    assert {"video", "prompt"} <= set(form["schema"]["required"])
