"""/v1/batches: OpenAI's Batch API, translated to and from the batch use case
(mediagate.batches.service); the runner (mediagate.batches.runner) does the work."""

from __future__ import annotations

from fastapi import Request, Response

from mediagate import context
from mediagate.batches.service import openai_batch
from mediagate.http.deps import (
    Client,
    gateway,
    json_body,
    list_limit,
    list_page,
    public_base,
    read_budget,
)
from mediagate.http.routes import Routes
from mediagate.jsonio import FastJSONResponse
from mediagate.videos.spec import unknown_parameter

batches = Routes(prefix="/v1/batches")


@batches.post("", name="batches.create")
async def create(request: Request, policy: Client) -> Response:
    gw = gateway(request)
    body = await json_body(request)
    row = await gw.batches.create(
        policy, body, public_base(request), principal=context.current().principal
    )
    gw.batch_runner.wake()
    return FastJSONResponse(openai_batch(row))


@batches.get("", name="batches.list")
async def list_(request: Request, policy: Client) -> Response:
    query = request.query_params
    unknown = sorted(set(query) - {"after", "limit"})
    if unknown:
        raise unknown_parameter(unknown[0])
    limit = list_limit(query.get("limit"))
    await read_budget(request, policy)
    rows, more = await gateway(request).batches.list(
        policy.name, after=query.get("after") or None, limit=limit
    )
    page = list_page([openai_batch(row) for row in rows], more)
    # An empty page has no first or last id: left out, as ListBatchesResponse has them
    # optional strings (not nullable).
    return FastJSONResponse({k: v for k, v in page.items() if v is not None})


@batches.get("/{batch_id}", name="batches.retrieve")
async def retrieve(batch_id: str, request: Request, policy: Client) -> Response:
    await read_budget(request, policy)
    return FastJSONResponse(
        openai_batch(await gateway(request).batches.retrieve(policy.name, batch_id))
    )


@batches.post("/{batch_id}/cancel", name="batches.cancel")
async def cancel(batch_id: str, request: Request, policy: Client) -> Response:
    gw = gateway(request)
    row = await gw.batches.cancel(policy.name, batch_id)
    gw.batch_runner.wake()
    return FastJSONResponse(openai_batch(row))
