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

from .conftest import CLIENT_KEY, OTHER_CLIENT_KEY, Gateway, wait_until

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


# --- The Files and Batch APIs (issue 27) ------------------------------------------------------

_OURS = _ROOT / "mediagate" / "http" / "openapi.yaml"


@cache
def _our_schemas() -> dict[str, Any]:
    with _OURS.open() as handle:
        schemas: dict[str, Any] = yaml.safe_load(handle)["components"]["schemas"]
    return schemas


def conforms_to_ours(instance: Any, schema: str) -> None:
    """Conforms to the schema of that name in mediagate's own document (where it says how it
    differs from the official one, or names what OpenAI documents only in prose)."""
    validator = OAS31Validator(
        {"$ref": f"#/components/schemas/{schema}", "components": {"schemas": _our_schemas()}}
    )
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(instance)]
    assert not errors, (schema, errors)


def _upload(http: httpx2.Client, lines: list[Any], purpose: str = "batch") -> dict[str, Any]:
    content = b"".join(
        (line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines
    )
    response = http.post(
        "/v1/files",
        data={"purpose": purpose},
        files=[("file", ("requests.jsonl", content, "application/jsonl"))],
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _image_line(custom_id: str, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/images/generations",
        "body": {"model": "gpt-image-2-web", "prompt": f"a fox {custom_id}"} | body,
    }


def test_file_answers_conform(gateway: Gateway) -> None:
    """An upload, its retrieve, the key's list and a delete, each as the official schema says;
    another key's look at the file is a 404 error body."""
    with gateway.http() as http:
        # An empty page: no first or last file, null (the documented difference, and only it).
        empty = http.get("/v1/files").json()
        assert empty == {
            "object": "list",
            "data": [],
            "first_id": None,
            "last_id": None,
            "has_more": False,
        }
        conforms_to_ours(empty, "ListFilesResponse")
        made = _upload(http, [_image_line("a")])
        conforms(made, "OpenAIFile")
        assert made["object"] == "file" and made["purpose"] == "batch"
        assert made["bytes"] == len(json.dumps(_image_line("a"))) + 1
        expiring = http.post(
            "/v1/files",
            data={
                "purpose": "user_data",
                "expires_after[anchor]": "created_at",
                "expires_after[seconds]": "3600",
            },
            files=[("file", ("notes.txt", b"hello\n", "text/plain"))],
        ).json()
        conforms(expiring, "OpenAIFile")
        assert expiring["expires_at"] == expiring["created_at"] + 3600
        conforms(http.get(f"/v1/files/{made['id']}").json(), "OpenAIFile")
        # A file kept until deleted has no expires_at (not null), read by the SDK as None.
        assert "expires_at" not in made
        assert gateway.sdk().files.retrieve(made["id"]).expires_at is None
        listed = http.get("/v1/files").json()
        conforms(listed, "ListFilesResponse")
        conforms_to_ours(listed, "ListFilesResponse")
        assert [f["id"] for f in listed["data"]] == [expiring["id"], made["id"]]
        conforms(http.get("/v1/files", params={"purpose": "batch"}).json(), "ListFilesResponse")
        with gateway.http(OTHER_CLIENT_KEY) as other:
            theirs = other.get(f"/v1/files/{made['id']}")
        assert theirs.status_code == 404
        conforms(theirs.json(), "ErrorResponse")
        deleted = http.delete(f"/v1/files/{made['id']}").json()
        conforms(deleted, "DeleteFileResponse")
        assert deleted == {"id": made["id"], "object": "file", "deleted": True}


def test_batch_answers_and_output_lines_conform(make_gateway: Any) -> None:
    """A 2-line images batch: in progress at create, completed, listed, cancelled-or-not; its
    output file (purpose batch_output) and each output line, whose body is the endpoint's own
    answer (the official document has no schema of the line itself: its shape is checked here,
    its body against ImagesResponse)."""
    gw = make_gateway(batch_poll_interval_s=0.05)
    with gw.http() as http:
        source = _upload(http, [_image_line("one"), _image_line("two", size="1024x1024")])
        body = {
            "input_file_id": source["id"],
            "endpoint": "/v1/images/generations",
            "completion_window": "24h",
            "metadata": {"job": "nightly"},
        }
        created = http.post("/v1/batches", json=body)
        assert created.status_code == 200, created.text
        batch = created.json()
        conforms(batch, "Batch")
        conforms_to_ours(batch, "Batch")  # with cost_usd and estimate_usd
        assert batch["status"] == "in_progress"
        assert batch["request_counts"] == {"total": 2, "completed": 0, "failed": 0}
        assert batch["estimate_usd"] > 0 and batch["cost_usd"] == 0

        seen: dict[str, Any] = {}

        def completed() -> bool:
            answer: dict[str, Any] = http.get(f"/v1/batches/{batch['id']}").json()
            conforms(answer, "Batch")  # every state it passes through
            conforms_to_ours(answer, "Batch")
            seen.clear()
            seen.update(answer)
            return bool(answer["status"] == "completed")

        wait_until(completed, timeout_s=30)
        assert seen["request_counts"] == {"total": 2, "completed": 2, "failed": 0}
        assert seen["cost_usd"] > 0 and seen["metadata"] == {"job": "nightly"}
        assert seen["completed_at"] >= seen["in_progress_at"] >= seen["created_at"]
        assert "error_file_id" not in seen and "errors" not in seen  # no value: left out
        listed = http.get("/v1/batches").json()
        conforms(listed, "ListBatchesResponse")
        assert [b["id"] for b in listed["data"]] == [batch["id"]]
        # A finished batch is not cancelled: a 409 error body.
        refused = http.post(f"/v1/batches/{batch['id']}/cancel")
        assert refused.status_code == 409
        conforms(refused.json(), "ErrorResponse")

        output = http.get(f"/v1/files/{seen['output_file_id']}").json()
        conforms(output, "OpenAIFile")
        assert output["purpose"] == "batch_output"
        content = http.get(f"/v1/files/{seen['output_file_id']}/content")
        assert content.status_code == 200
        lines = [json.loads(line) for line in content.text.splitlines()]
    assert sorted(line["custom_id"] for line in lines) == ["one", "two"]
    for line in lines:
        conforms_to_ours(line, "MediagateBatchOutputLine")
        assert set(line) == {"id", "custom_id", "response", "error"}
        assert line["id"].startswith("batch_req_") and line["error"] is None
        response = line["response"]
        assert set(response) == {"status_code", "request_id", "body"}
        assert response["status_code"] == 200 and response["request_id"].startswith("req_")
        conforms(response["body"], "ImagesResponse")


def test_a_failed_batch_conforms(gateway: Gateway) -> None:
    """A file with invalid lines makes a `failed` batch whose `errors` name them (BatchError)."""
    with gateway.http() as http:
        empty = http.get("/v1/batches").json()
        conforms(empty, "ListBatchesResponse")  # no first_id or last_id on an empty page
        assert empty == {"object": "list", "data": [], "has_more": False}
        source = _upload(http, [_image_line("ok"), b"not json", _image_line("bad", n=0)])
        answer = http.post(
            "/v1/batches",
            json={
                "input_file_id": source["id"],
                "endpoint": "/v1/images/generations",
                "completion_window": "24h",
            },
        )
        assert answer.status_code == 200, answer.text
        failed = answer.json()
        conforms(failed, "Batch")
        assert failed["status"] == "failed" and failed["failed_at"]
        conforms_to_ours(failed, "Batch")
        assert [e["line"] for e in failed["errors"]["data"]] == [2, 3]
        assert failed["cost_usd"] == failed["estimate_usd"] == 0
        # What has no value is left out, and the SDK reads it as None.
        assert "output_file_id" not in failed and "in_progress_at" not in failed
        read = gateway.sdk().batches.retrieve(failed["id"])
        assert read.status == "failed" and read.output_file_id is None and read.errors
        conforms(http.get(f"/v1/batches/{failed['id']}").json(), "Batch")
        conforms(http.get("/v1/batches").json(), "ListBatchesResponse")
