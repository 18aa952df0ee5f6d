"""Server-Sent Events as OpenAI streams them: `data: <json>` events, then `data: [DONE]`."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

DONE = "data: [DONE]\n\n"


def event(payload: BaseModel | dict[str, Any]) -> str:
    data = payload.model_dump_json() if isinstance(payload, BaseModel) else json.dumps(payload)
    return f"data: {data}\n\n"


# A comment line: clients ignore it, proxies see bytes flowing and keep the connection.
KEEPALIVE = ": keep-alive\n\n"
