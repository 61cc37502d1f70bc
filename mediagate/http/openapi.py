"""GET /v1/openapi.json: the OpenAPI document of the /v1 API, as JSON.

The document is the saved file beside this module (`openapi.yaml`, shipped as package data):
the official OpenAI document's paths and schemas that mediagate implements, with mediagate's
differences and additions marked `x-mediagate`. It is read and rendered once per process, on
the first request for it (in a worker thread: parsing it is a few milliseconds of CPU), never at
import. No key needed, as OpenAI publishes its own document: it describes the API, not this
deployment's keys, prices or upstreams. FastAPI's own generated document stays off
(`openapi_url=None` in mediagate.app): it would describe handlers, not the API.
"""

from __future__ import annotations

from importlib import resources

import anyio.to_thread
import yaml
from fastapi.responses import Response

from mediagate import jsonio
from mediagate.catalog import SAFE_LOADER
from mediagate.http.routes import Routes

openapi = Routes(prefix="/v1")
DOCUMENT = "openapi.yaml"
_rendered: bytes | None = None


def render_document() -> bytes:
    """The saved document as compact JSON."""
    text = resources.files("mediagate.http").joinpath(DOCUMENT).read_text(encoding="utf-8")
    # The safe loader's C build where PyYAML has it (the catalog's): about 20 ms, 10x faster.
    return jsonio.dumps(yaml.load(text, Loader=SAFE_LOADER))  # noqa: S506 (a safe loader)


@openapi.get("/openapi.json", name="openapi")
async def openapi_document() -> Response:
    global _rendered
    if _rendered is None:  # two first requests at once both render it: the same bytes
        _rendered = await anyio.to_thread.run_sync(render_document)
    return Response(_rendered, media_type="application/json")
