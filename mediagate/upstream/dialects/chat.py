"""The chat dialect: routes (sora_image, gpt-4o-image) that draw through chat completions.

The aspect ratio travels as a `【2:3】` marker at the end of the prompt, and the answer is
Markdown with image links that the model wrote, so the links are untrusted (see
`mediagate.upstream.fetcher`).
"""

from __future__ import annotations

import re
from typing import Any

from mediagate.errors import UpstreamError
from mediagate.upstream.dialects import (
    EditImages,
    ImageSpec,
    UpstreamImage,
    UpstreamRequest,
    UpstreamResult,
)

# ![alt](url) with an http(s) URL; anything else in the answer is prose.
_IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(\s*<?(https?://[^\s)>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_MAX_QUOTED = 500


def with_marker(prompt: str, ratio: str | None) -> str:
    return f"{prompt.rstrip()}【{ratio}】" if ratio else prompt


def extract_links(content: str) -> list[str]:
    return _IMAGE_LINK.findall(content)


class ChatDialect:
    # Chat completions take input images inside the JSON message, as data URLs.
    inline_images = True

    def build(self, spec: ImageSpec, n: int, edit: EditImages | None = None) -> UpstreamRequest:
        # One image per call (route max_n is 1): `n` is never sent to chat completions.
        text = with_marker(spec.prompt, spec.ratio)
        content: str | list[dict[str, Any]] = text
        if edit is not None:
            content = [{"type": "text", "text": text}] + [
                {"type": "image_url", "image_url": {"url": url}} for url in edit.data_urls
            ]
        body: dict[str, Any] = {
            "model": spec.route.upstream_model,
            "messages": [{"role": "user", "content": content}],
        }
        body.update(spec.params)
        return UpstreamRequest("/chat/completions", json=body)

    def parse(self, payload: Any) -> UpstreamResult:
        content = _content(payload)
        links = extract_links(content)
        if not links:
            words = " ".join(content.split())[:_MAX_QUOTED] or "(an empty answer)"
            raise UpstreamError(
                f"The upstream answered without an image: {words}",
                code="no_image",
                # The upstream answered (and charged); the same prompt would most likely be
                # refused again.
                paid=True,
            )
        return UpstreamResult([UpstreamImage(url=link) for link in links])


def _content(payload: Any) -> str:
    try:
        content = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise UpstreamError(
            "The upstream's chat answer had no message.", code="bad_upstream_response"
        ) from None
    if isinstance(content, list):  # content parts: keep the text ones
        content = "\n".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("text")
        )
    return content if isinstance(content, str) else ""


DIALECT = ChatDialect()
