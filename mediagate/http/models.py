"""GET /v1/models and /v1/models/{id}: the models this deployment offers the calling key.

Each is the OpenAI model object (`id`, `object`, `created`, `owned_by`) plus a `mediagate` object
of what the catalog knows about it: its kind, whether it is a legacy model (kept for existing
integrations), whether it is the default, and for a retired name served by an alias, its
successor and retirement date. A retired name is listed while its successor is offered.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from mediagate.accounting.clients import KeyPolicy
from mediagate.catalog import Catalog
from mediagate.errors import ModelNotFound
from mediagate.http.deps import Client, gateway
from mediagate.http.routes import Routes

models = Routes(prefix="/v1")


def _model_object(catalog: Catalog, model_id: str) -> dict[str, Any]:
    target, alias = catalog.resolve(model_id)
    model = catalog.model(target)
    kind = catalog.routes[model.routes[0]].kind
    default = catalog.default_video_model if kind == "video" else catalog.default_image_model
    about: dict[str, Any] = {"kind": kind, "legacy": model.legacy, "default": model_id == default}
    if alias is not None:
        about["alias_for"] = alias.to
        about["deprecated"] = alias.retired_on.isoformat()
    return {
        "id": model_id,
        "object": "model",
        "created": model.created,
        "owned_by": model.owned_by,
        "mediagate": about,
    }


def _offered(catalog: Catalog, policy: KeyPolicy) -> list[str]:
    """The model names the key may use: the models, and the aliases whose successor serves."""
    served = [
        name
        for name, alias in catalog.aliases.items()
        if alias.retired is None and alias.to in catalog.models
    ]
    names = [*catalog.models, *served]
    return sorted(name for name in names if _allowed(catalog, policy, name))


def _allowed(catalog: Catalog, policy: KeyPolicy, name: str) -> bool:
    """A key may use a retired name it lists, or whose successor it may use."""
    alias = catalog.aliases.get(name)
    return policy.allows(name) or (alias is not None and policy.allows(alias.to))


@models.get("/models", name="models")
async def list_models(request: Request, policy: Client) -> dict[str, Any]:
    catalog = gateway(request).catalog
    data = [_model_object(catalog, name) for name in _offered(catalog, policy)]
    return {"object": "list", "data": data}


@models.get("/models/{model_id:path}", name="models")
async def get_model(model_id: str, request: Request, policy: Client) -> dict[str, Any]:
    catalog = gateway(request).catalog
    if not _allowed(catalog, policy, model_id):
        raise ModelNotFound(
            f"The model '{model_id}' does not exist or you do not have access to it.",
            param="model",
        )
    return _model_object(catalog, model_id)
