"""POST /v1/images/generations and /v1/images/edits: requests in, answers out.

Translation only: the body (JSON, or the multipart form of an edit) goes to the image service
(mediagate.images.service), which admits, runs and settles it; its answer goes back as the
OpenAI ImagesResponse or as server-sent events. A client that goes away cancels the work.
"""

from __future__ import annotations

from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from mediagate.http.bodies import bounded
from mediagate.http.deps import Client, admitted, gateway, json_body, public_base
from mediagate.http.disconnect import cancelled_on_disconnect
from mediagate.http.idempotency import form_digest, idempotency, json_digest
from mediagate.http.routes import Routes
from mediagate.images.service import ImagesAnswer
from mediagate.images.uploads import MAX_IMAGES
from mediagate.jsonio import SplicedJSONResponse

images = Routes(prefix="/v1/images")
GENERATIONS = "images.generations"


def render(answer: ImagesAnswer) -> Response:
    if answer.events is not None:
        return StreamingResponse(
            answer.events, media_type="text/event-stream", headers=answer.headers
        )
    # Megabytes of base64: the text around the images rendered by orjson, the images sent as
    # the bytes they came as (see mediagate.jsonio).
    return SplicedJSONResponse(answer.body, headers=answer.headers)


@images.post("/generations", name=GENERATIONS)
async def generations(request: Request, policy: Client) -> Response:
    service = gateway(request).images
    # The key's rate, slot and budget before a byte of the body is read.
    async with admitted(request, policy) as gate:
        body = await json_body(request, service.settings.max_generation_json_bytes)

        async def digest() -> str:
            return json_digest(body)

        # A repeated Idempotency-Key is answered before anything is metered or sent upstream.
        async with idempotency(request, digest) as slot:
            if slot.replay is not None:
                return slot.replay
            job = service.plan_generation(body, public_base(request))
            # A client that goes away cancels the upstream calls instead of paying for them.
            async with cancelled_on_disconnect(request):
                answer = await service.answer(policy, job, gate=gate)
            return slot.keep(render(answer))


@images.post("/edits", name="images.edits")
async def edits(request: Request, policy: Client) -> Response:
    service = gateway(request).images
    limit = service.settings.edit_max_total_bytes + 1024 * 1024  # files plus the text fields
    # The uploads are spooled to temporary files by the parser: the only copy the gateway
    # keeps, closed by the service once the answer (or the stream) is done. Their bytes are
    # counted as they arrive, so a chunked upload is cut off at the limit too (a 413). The
    # key's rate, slot and budget are checked before a byte of them is read.
    async with admitted(request, policy) as gate:
        form = await bounded(request, limit).form(max_files=MAX_IMAGES + 4, max_fields=64)
        async with idempotency(request, lambda: form_digest(form), skipped=form.close) as slot:
            if slot.replay is not None:
                return slot.replay
            job = await service.plan_edit(form, public_base(request))
            async with cancelled_on_disconnect(request):
                answer = await service.answer(policy, job, cleanup=form.close, gate=gate)
            return slot.keep(render(answer))
