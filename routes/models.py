"""`GET /v1/models`: the model this server answers for, as OpenAI lists models."""

from __future__ import annotations

from fastapi import APIRouter, Request

from protocol.openai import ModelCard, ModelList, now
from routes.state import frontend

router = APIRouter(tags=["models"])


@router.get("/v1/models")
async def list_models(request: Request) -> ModelList:
    return ModelList(data=[ModelCard(id=frontend(request).model_name, created=now())])
