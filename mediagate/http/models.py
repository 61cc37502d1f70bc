"""GET /v1/models and /v1/models/{id}: the models this deployment offers the calling key."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from mediagate.catalog import Catalog
from mediagate.errors import ModelNotFound
from mediagate.http.deps import Client, client, endpoint, gateway

models = APIRouter(prefix="/v1", dependencies=[Depends(client)])


def _model_object(catalog: Catalog, model_id: str) -> dict[str, Any]:
    model = catalog.model(model_id)
    return {"id": model.id, "object": "model", "created": model.created, "owned_by": model.owned_by}


@models.get("/models", dependencies=[endpoint("models")])
async def list_models(request: Request, policy: Client) -> dict[str, Any]:
    catalog = gateway(request).catalog
    allowed = [m for m in sorted(catalog.models) if policy.allows(m)]
    return {"object": "list", "data": [_model_object(catalog, m) for m in allowed]}


@models.get("/models/{model_id:path}", dependencies=[endpoint("models")])
async def get_model(model_id: str, request: Request, policy: Client) -> dict[str, Any]:
    if not policy.allows(model_id):
        raise ModelNotFound(
            f"The model '{model_id}' does not exist or you do not have access to it.",
            param="model",
        )
    return _model_object(gateway(request).catalog, model_id)
