"""`GET /v1/models`: every model this server answers for, of every type, as OpenAI lists them.

The chat model is the frontend's own (`model:`); its card carries vLLM's
`max_model_len` and the input modalities, as the Processor serving it
describes them (while no Processor answers, the card lists the model without
them). Other types (videos) come from the cards their live workers registered
in etcd.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from protocol.errors import ServiceError
from protocol.openai import ModelCard, ModelList, now
from routes.state import FrontendState, frontend

router = APIRouter(tags=["models"])
DESCRIBE_TIMEOUT_S = 5.0


@router.get("/v1/models")
async def list_models(request: Request) -> ModelList:
    state = frontend(request)
    cards = [await chat_card(state)] if "chat" in state.model_types else []
    for client in state.components.values():
        for instance in client.instances():
            card = instance.model
            if card and card["name"] not in [c.id for c in cards]:
                cards.append(ModelCard(id=card["name"], created=now()))
    return ModelList(data=cards)


async def chat_card(state: FrontendState) -> ModelCard:
    card = ModelCard(id=state.model_name, created=now())
    try:
        replies = state.upstream("chat").stream("describe", None, deadline_s=DESCRIBE_TIMEOUT_S)
        async for description in replies:
            card = card.model_copy(update=description)
    except ServiceError:
        pass  # no Processor answers now: the card without its details
    return card
