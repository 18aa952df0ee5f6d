"""`GET /v1/models`: every model this server answers for, of every type, as OpenAI lists them.

The chat model is the frontend's own (`model:`); other types (videos) come
from the cards their live workers registered in etcd.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from protocol.openai import ModelCard, ModelList, now
from routes.state import frontend

router = APIRouter(tags=["models"])


@router.get("/v1/models")
async def list_models(request: Request) -> ModelList:
    state = frontend(request)
    names = [state.model_name] if "chat" in state.model_types else []
    for client in state.components.values():
        for instance in client.instances():
            card = instance.model
            if card and card["name"] not in names:
                names.append(card["name"])
    return ModelList(data=[ModelCard(id=name, created=now()) for name in names])
