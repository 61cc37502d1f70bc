"""The gateway's answers checked against the official OpenAI OpenAPI document's schemas
(issue 14, item 15): images, image stream events (relayed and emulated), videos, models and
errors. Skipped when the document is not there (../shared/openai-openapi/openapi.yaml, or
MEDIAGATE_OPENAPI_YAML)."""

from __future__ import annotations

import json
import os
import re
from functools import cache
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from openapi_schema_validator import OAS31Validator

from .conftest import CLIENT_KEY, Gateway

_ROOT = Path(__file__).resolve().parent.parent
_CANDIDATES = [
    Path(os.environ.get("MEDIAGATE_OPENAPI_YAML", "/nonexistent")),
    _ROOT.parent / "shared" / "openai-openapi" / "openapi.yaml",
    Path("/work/shared/openai-openapi/openapi.yaml"),
]
_DOCUMENT = next((p for p in _CANDIDATES if p.is_file()), None)
pytestmark = pytest.mark.skipif(_DOCUMENT is None, reason="the OpenAI OpenAPI document is absent")


@cache
def _document() -> dict[str, Any]:
    assert _DOCUMENT is not None
    with _DOCUMENT.open() as handle:
        document: dict[str, Any] = yaml.load(handle, Loader=yaml.CSafeLoader)
    return document


def _components() -> dict[str, Any]:
    return {"schemas": _document()["components"]["schemas"]}


_WXH = re.compile(r"^[1-9][0-9]{1,4}x[1-9][0-9]{1,4}$")


def conforms(instance: Any, schema: str) -> None:
    """Conforms to the official schema, with one documented exception (docs/api.md, "Sizes
    beyond the official three"): a `size` outside the official enum, when it is a WxH the
    route made, is answered as it is (the SDKs type it `str`)."""
    validator = OAS31Validator(
        {"$ref": f"#/components/schemas/{schema}", "components": _components()}
    )
    errors = [
        f"{list(e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(instance)
        if not _beyond_the_size_enum(e)
    ]
    assert not errors, (schema, errors)


_STREAM_EVENTS = {
    "image_generation.partial_image": "ImageGenPartialImageEvent",
    "image_generation.completed": "ImageGenCompletedEvent",
}


def _beyond_the_size_enum(error: Any) -> bool:
    return (
        list(error.absolute_path) == ["size"]
        and isinstance(error.instance, str)
        and bool(_WXH.match(error.instance))
        and error.instance not in ("1024x1024", "1024x1536", "1536x1024")
    )


def events(response: httpx2.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    return [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]


@pytest.mark.parametrize(
    ("model", "body"),
    [
        ("gpt-image-2", {"size": "1024x1024", "quality": "low"}),
        ("gpt-image-2-web", {}),
        ("sora_image", {"size": "1024x1536"}),
        # Beyond the official enum's three sizes: the documented exception.
        ("gpt-image-2", {"size": "2048x2048", "quality": "low"}),
        ("gpt-image-2.6-web", {}),  # the route picks 2048x2048
        ("gpt-image-2.6-flare-vip", {"size": "3840x2160"}),
    ],
)
def test_image_answers_and_their_stream_events_conform(
    gateway: Gateway, model: str, body: dict[str, Any]
) -> None:
    plain = gateway.generate("a fox", model=model, response_format="b64_json", **body)
    assert plain.status_code == 200, plain.text
    conforms(plain.json(), "ImagesResponse")
    streamed = gateway.generate("a fox", model=model, stream=True, **body)
    kinds = []
    for event in events(streamed):
        kinds.append(event["type"])
        # ImageGenStreamEvent is one of these by `type` (its discriminator): the schema of the
        # event's own type, so that the size exception applies inside it.
        conforms(event, _STREAM_EVENTS[event["type"]])
    assert kinds[-1] == "image_generation.completed"
    # The size is the image's, the same in the plain answer and the completed event.
    assert plain.json()["size"] == event["size"]
    if "size" in body:
        assert event["size"] == body["size"]


def test_the_size_exception_is_that_narrow() -> None:
    """Only a WxH beyond the enum passes: any other size, or another field, still fails."""
    answer = {"created": 1, "data": [{"b64_json": "AA=="}]}
    conforms(answer | {"size": "3840x2160"}, "ImagesResponse")
    for bad in ({"size": "huge"}, {"size": "0x5"}, {"quality": "ultra"}):
        with pytest.raises(AssertionError):
            conforms(answer | bad, "ImagesResponse")


def test_image_edit_stream_events_conform(gateway: Gateway) -> None:
    from .test_edits import PNG_SMALL

    with gateway.http() as http:
        for model in ("gpt-image-2", "gpt-image-2-web"):
            response = http.post(
                "/v1/images/edits",
                data={"model": model, "prompt": "e", "stream": "true"},
                files=[("image", ("a.png", PNG_SMALL, "image/png"))],
            )
            for event in events(response):
                conforms(event, "ImageEditStreamEvent")


def test_models_and_errors_conform(gateway: Gateway) -> None:
    with gateway.http() as http:
        models = http.get("/v1/models").json()
        conforms(models, "ListModelsResponse")
        conforms(http.get(f"/v1/models/{models['data'][0]['id']}").json(), "Model")
        errors = [
            http.post("/v1/images/generations", json={"prompt": "p", "n": 0}),
            http.get("/v1/nothing-here"),
            http.delete("/v1/images/generations"),
            http.get("/v1/videos/video_nope"),
        ]
    with httpx2.Client(base_url=gateway.url) as anonymous:
        errors.append(anonymous.get("/v1/models"))
    for response in errors:
        assert response.status_code >= 400
        conforms(response.json(), "ErrorResponse")
        assert response.json()["error"]["code"]


def test_video_answers_conform(videos_gw: Gateway) -> None:
    sdk = videos_gw.sdk(CLIENT_KEY)
    video = sdk.videos.create_and_poll(model="sora-2", prompt="waves", size="1280x720", seconds="4")
    with videos_gw.http() as http:
        retrieved = http.get(f"/v1/videos/{video.id}")
        conforms(retrieved.json(), "VideoResource")
        # OpenAI answers the model it was asked for (VideoModel's sora-2); the route that
        # served it (Muse) is in the gateway's headers.
        assert video.model == retrieved.json()["model"] == "sora-2"
        assert retrieved.headers["x-mediagate-route"] == "muse-video"
        conforms(http.get("/v1/videos").json(), "VideoListResource")
        conforms(http.delete(f"/v1/videos/{video.id}").json(), "DeletedVideoResource")


_METHODS = ("get", "put", "post", "delete", "patch")


def test_every_openai_video_and_image_endpoint_not_served_is_a_404(gateway: Gateway) -> None:
    """Walks the official document's paths under /videos and /images: each method and path
    mediagate does not serve (its own document lists what it does) is a 404
    `unsupported_endpoint` naming it, never a 405 or a video's 404."""
    with httpx2.Client(base_url=gateway.url) as anonymous:
        ours = anonymous.get("/v1/openapi.json").json()["paths"]
    served = {(m, path) for path, item in ours.items() for m in item if m in _METHODS}
    unserved = [
        (method, path)
        for path, item in _document()["paths"].items()
        if path.startswith(("/videos", "/images"))
        for method in item
        if method in _METHODS and (method, path) not in served
    ]
    assert set(unserved) >= {
        ("post", "/images/variations"),
        ("post", "/videos/edits"),
        ("post", "/videos/extensions"),
        ("post", "/videos/characters"),
        ("get", "/videos/characters/{character_id}"),
    }
    with gateway.http() as http:
        for method, path in unserved:
            concrete = "/v1" + re.sub(r"\{[^}]+\}", "x_1", path)
            response = http.request(method.upper(), concrete, json={})
            assert response.status_code == 404, (method, path, response.text)
            error = response.json()["error"]
            assert error["code"] == "unsupported_endpoint", (method, path)
            assert f"mediagate does not offer {method.upper()} {concrete}: " in error["message"]
            assert "allow" not in response.headers
