"""The Images API dialect: routes that speak /images/generations like OpenAI does.

Official-style routes take the request almost as is; the route's policy (applied in
`mediagate.images.plan`) has already removed what a reverse route rejects.
"""

from __future__ import annotations

from typing import Any

from mediagate.errors import UpstreamError
from mediagate.imagedata import LiftedB64
from mediagate.upstream.dialects import (
    EditImages,
    ImageSpec,
    UpstreamImage,
    UpstreamRequest,
    UpstreamResult,
)

# Top-level keys of an official ImagesResponse that describe the result.
_EXTRA_KEYS = ("background", "output_format", "quality", "size")


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class ImagesDialect:
    inline_images = False

    def build(self, spec: ImageSpec, n: int, edit: EditImages | None = None) -> UpstreamRequest:
        body: dict[str, Any] = {"model": spec.route.upstream_model, "prompt": spec.prompt}
        if n > 1:
            body["n"] = n
        body.update(spec.params)
        if "response_format" in spec.route.accepts:
            # Always explicit: upstream defaults differ by route (gpt-image-1 defaults to url).
            body["response_format"] = spec.response_format
        if edit is None:
            return UpstreamRequest("/images/generations", json=body)
        # Edits are multipart, as the official API takes them: one image as `image`, several
        # as repeated `image[]` parts.
        field = "image" if len(edit.files) == 1 else "image[]"
        files = [(field, image) for image in edit.files]
        if edit.mask is not None:
            files.append(("mask", edit.mask))
        form = {key: _form_value(value) for key, value in body.items()}
        return UpstreamRequest("/images/edits", form=form, files=files)

    def parse(self, payload: Any) -> UpstreamResult:
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list) or not data:
            raise UpstreamError("The upstream answered without any image.", code="no_image")
        images = []
        for item in data:
            if not isinstance(item, dict):
                continue
            b64, url = item.get("b64_json"), item.get("url")
            if isinstance(b64, LiftedB64) or (isinstance(b64, str) and b64):
                images.append(UpstreamImage(b64=b64, revised_prompt=item.get("revised_prompt")))
            elif isinstance(url, str) and url:
                images.append(UpstreamImage(url=url, revised_prompt=item.get("revised_prompt")))
        if not images:
            raise UpstreamError("The upstream answered without any image.", code="no_image")
        usage = payload.get("usage")
        extra = {k: payload[k] for k in _EXTRA_KEYS if isinstance(payload.get(k), str)}
        return UpstreamResult(images, usage if isinstance(usage, dict) else None, extra)


DIALECT = ImagesDialect()
