"""`GET /v1/models`: what the token group sells, as the reseller's new-api relay answers it.

new-api lists the models of the token's group, `{"object": "list", "data": [{"id", "object":
"model", "created", "owned_by", "supported_endpoint_types"}]}`, chat models (hundreds of them
upstream) beside the image and video ones. The listing is derived from the simulator's own
route tables (rules.py's image routes, the Sora, Muse, Seedance and Wan model tables), so a route
added there is listed without a change here.

Test knobs on `SimState`: `unlisted` holds (group, model) pairs the listing leaves out (a route
the upstream retired from a group), `listed` adds (group, model, endpoint type) entries (a model
new upstream; an empty type: an entry without `supported_endpoint_types`), and
`models_whole_list` answers every group the whole list, as a relay that does not filter by
group would.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from mediagate.simulator.ark import MODELS as ARK_MODELS
from mediagate.simulator.dashscope import MODELS as WAN_MODELS
from mediagate.simulator.dashscope import WAN_GROUP
from mediagate.simulator.jobs import recorded, sim_error_response
from mediagate.simulator.muse import MUSE_GROUPS, MUSE_MODELS
from mediagate.simulator.rules import SimError, image_routes
from mediagate.simulator.state import Call, SimConfig, SimState
from mediagate.simulator.videos import VIDEO_GROUPS, VIDEO_SIZES

IMAGE = "image-generation"
VIDEO = "openai-video"
CHAT = "openai"
# A few of the chat models every group also sells: the listing is mostly these upstream.
CHAT_MODELS = ("gpt-4o-mini", "gpt-5-mini", "claude-sonnet-4-5", "deepseek-v3.2")
_CREATED = 1_626_777_600  # new-api's fixed `created`
_OWNERS = {IMAGE: "openai", VIDEO: "custom", CHAT: "custom"}


def sold(config: SimConfig) -> dict[str, dict[str, str]]:
    """Per token group: model -> its endpoint type, from the route tables."""
    groups: dict[str, dict[str, str]] = {group: {} for group in set(config.keys.values())}

    def add(group: str, model: str, kind: str) -> None:
        groups.setdefault(group, {})[model] = kind

    for group, model, route in image_routes():
        add(group, model, CHAT if route == "chat" else IMAGE)
    for group in MUSE_GROUPS:
        for model in MUSE_MODELS:
            add(group, model, VIDEO)
    for model, spec in ARK_MODELS.items():
        for group in spec.groups:
            add(group, model, VIDEO)
    for model in WAN_MODELS:
        add(WAN_GROUP, model, VIDEO)
    if not config.sora_closed:
        for group in VIDEO_GROUPS:
            for model in VIDEO_SIZES:
                add(group, model, VIDEO)
    for group in groups:
        for model in CHAT_MODELS:
            add(group, model, CHAT)
    return groups


def listing(sold: dict[str, dict[str, str]], sim: SimState, group: str) -> list[dict[str, Any]]:
    """What `group`'s key is answered, from what each group sells (`sold`) and the test knobs."""
    groups = {g: dict(models) for g, models in sold.items()}
    for extra_group, model, kind in sim.listed:
        groups.setdefault(extra_group, {})[model] = kind
    scopes = groups.items() if sim.models_whole_list else [(group, groups.get(group, {}))]
    models = {m: k for g, sells in scopes for m, k in sells.items() if (g, m) not in sim.unlisted}
    entries = []
    for model, kind in sorted(models.items()):
        entry: dict[str, Any] = {
            "id": model,
            "object": "model",
            "created": _CREATED,
            "owned_by": _OWNERS.get(kind, "custom"),
        }
        if kind:  # an entry added with no kind: a relay that does not say (older new-api)
            entry["supported_endpoint_types"] = [kind]
        entries.append(entry)
    return entries


def register_listing_routes(app: FastAPI, config: SimConfig, sim: SimState) -> None:
    sells = sold(config)  # the route tables do not change while the simulator runs

    @app.get("/v1/models")
    async def list_models(request: Request) -> Response:
        async def handle(call: Call) -> Response:
            if call.group is None:
                raise SimError(401, "Invalid token", code="invalid_api_key")
            return JSONResponse({"object": "list", "data": listing(sells, sim, call.group)})

        return await recorded(request, config, sim, None, handle, sim_error_response)
