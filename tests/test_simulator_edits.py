"""The simulated upstream's /v1/images/edits and streaming must be as strict as the real routes."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from starlette.testclient import TestClient

from mediagate.servethread import BackgroundServer
from mediagate.simulator import (
    DEFAULT_SIM_KEYS,
    SimConfig,
    SimState,
    create_simulator_app,
    make_png,
)
from mediagate.simulator.rules import ConnectionCut

from .conftest import assert_error
from .test_simulator import decode_b64, png_size

BASE = "http://127.0.0.1:9999"
DEFAULT = "sk-sim-default"
OFFICIAL = "sk-sim-official"
ENTERPRISE = "sk-sim-enterprise"
IMAGES = "/v1/images/generations"
EDITS = "/v1/images/edits"
# A 64x64 source keeps the uploads tiny; outputs still come at the requested size.
SOURCE = make_png(64, 64, "source picture")
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 32
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 32

Files = list[tuple[str, tuple[str, bytes, str]]]


@pytest.fixture
def state() -> SimState:
    return SimState()


@pytest.fixture
def client(state: SimState) -> TestClient:
    app = create_simulator_app(SimConfig(keys=dict(DEFAULT_SIM_KEYS)), state)
    return TestClient(app, base_url=BASE)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, SimState]]:
    """A real uvicorn server, for what only a socket shows (timing, dropped connections)."""
    state = SimState()
    app = create_simulator_app(SimConfig(keys=dict(DEFAULT_SIM_KEYS)), state)
    with BackgroundServer(app) as running:
        yield running.url, state


def auth(token: str = DEFAULT) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def image_part(data: bytes = SOURCE, name: str = "src.png", field: str = "image") -> Any:
    return (field, (name, data, "image/png"))


def edit(
    client: TestClient,
    fields: dict[str, str],
    files: Files | None = None,
    token: str = DEFAULT,
) -> Any:
    parts = [image_part()] if files is None else files
    return client.post(EDITS, data=fields, files=parts, headers=auth(token))


def parse_sse(text: str) -> list[dict[str, Any]]:
    """Strict SSE parsing: every event is exactly `event:` then `data:`, and they agree."""
    assert text.endswith("\n\n")
    events = []
    for block in text.removesuffix("\n\n").split("\n\n"):
        event_line, data_line = block.split("\n")
        kind = event_line.removeprefix("event: ")
        data = json.loads(data_line.removeprefix("data: "))
        assert data["type"] == kind
        events.append(data)
    return events


def edit_seed(prompt: str, index: int = 0) -> str:
    base = f"{prompt}\x00edit"
    return base if index == 0 else f"{base}\x00{index}"


# --- happy paths per route ---------------------------------------------------------------


def test_official_edit_as_a_link_counts_the_input_image(
    client: TestClient, state: SimState
) -> None:
    fields = {"model": "gpt-image-2", "prompt": "make it red", "response_format": "url"}
    response = edit(client, fields, token=OFFICIAL)
    assert response.status_code == 200, response.text
    body = response.json()
    url = body["data"][0]["url"]
    data = client.get(url).content
    assert data == make_png(1024, 1024, edit_seed("make it red"), "gpt-image-2")
    # An edit is never the generation of the same prompt.
    assert data != make_png(1024, 1024, "make it red", "gpt-image-2")
    details = body["usage"]["input_tokens_details"]
    assert details["image_tokens"] == 256
    assert body["usage"]["input_tokens"] == details["image_tokens"] + details["text_tokens"]
    assert state.calls[0].status == 200
    assert state.calls[0].model == "gpt-image-2"


@pytest.mark.parametrize("token", [OFFICIAL, ENTERPRISE])
def test_official_edit(client: TestClient, token: str) -> None:
    fields = {
        "model": "gpt-image-2",
        "prompt": "a fox",
        "size": "2048x1152",
        "quality": "high",
        "background": "auto",
        "input_fidelity": "high",
        "output_format": "webp",
        "output_compression": "80",
        "n": "2",
        "user": "u1",
    }
    response = edit(client, fields, token=token)
    assert response.status_code == 200, response.text
    result = response.json()
    images = [base64.b64decode(item["b64_json"], validate=True) for item in result["data"]]
    assert images == [make_png(2048, 1152, edit_seed("a fox", i), "gpt-image-2") for i in range(2)]
    assert (result["size"], result["quality"], result["background"]) == (
        "2048x1152",
        "high",
        "opaque",
    )
    assert result["output_format"] == "webp"
    assert result["usage"]["total_tokens"] > 0


def test_web_edit_quirks(client: TestClient) -> None:
    response = edit(client, {"model": "gpt-image-2", "prompt": "a teapot"})
    assert response.status_code == 200, response.text
    item = response.json()["data"][0]
    assert item["b64_json"].startswith("data:image/png;base64,")
    assert decode_b64(item["b64_json"]) == make_png(
        1024, 1024, edit_seed("a teapot"), "gpt-image-2"
    )
    assert item["revised_prompt"] == "a teapot"
    assert "usage" not in response.json()


@pytest.mark.parametrize(
    ("size", "expected"), [(None, (2048, 2048)), ("3840x2160", (3840, 2160)), ("848x1280", None)]
)
def test_vip_edit_table_sizes(
    client: TestClient, size: str | None, expected: tuple[int, int] | None
) -> None:
    fields = {"model": "gpt-image-2-vip", "prompt": "a kite"}
    if size is not None:
        fields["size"] = size
    response = edit(client, fields)
    assert response.status_code == 200, response.text
    value = response.json()["data"][0]["b64_json"]
    assert not value.startswith("data:")
    width, height = expected or tuple(map(int, (size or "").split("x")))
    assert png_size(decode_b64(value)) == (width, height)


@pytest.mark.parametrize(
    ("model", "extra", "param"),
    [
        ("gpt-image-2", {"size": "1024x1024"}, "size"),
        ("gpt-image-2", {"size": "auto"}, "size"),
        ("gpt-image-2", {"quality": "high"}, "quality"),
        ("gpt-image-2", {"n": "2"}, "n"),
        ("gpt-image-2", {"input_fidelity": "high"}, "input_fidelity"),
        ("gpt-image-2-vip", {"quality": "low"}, "quality"),
        ("gpt-image-2-vip", {"size": "auto"}, "size"),
        ("gpt-image-2-vip", {"size": "1024x1024"}, "size"),
        ("gpt-image-2-vip", {"n": "2"}, "n"),
    ],
)
def test_reverse_routes_reject_on_edits(
    client: TestClient, model: str, extra: dict[str, str], param: str
) -> None:
    message = assert_error(edit(client, {"model": model, "prompt": "p"} | extra), 400, param)
    if param == "quality" or (model == "gpt-image-2" and param == "size"):
        assert "does not support" in message


@pytest.mark.parametrize("model", ["gpt-image-2.5-flare-vip", "gpt-image-2.5-sunburst-vip"])
def test_2_5_vip_edits_take_reference_images(client: TestClient, model: str) -> None:
    fields = {"model": model, "prompt": "p", "size": "2048x1152", "quality": "xhigh"}
    response = edit(client, fields, [image_part(field="image[]")] * 3)
    assert response.status_code == 200, response.text
    assert png_size(base64.b64decode(response.json()["data"][0]["b64_json"])) == (2048, 1152)


def test_cached_input_image_tokens_on_an_edit(client: TestClient) -> None:
    fields = {"model": "gpt-image-2.6-sunburst", "prompt": "again [sim:cached=2:300]"}
    response = edit(client, fields, [image_part(field="image[]")] * 2, OFFICIAL)
    details = response.json()["usage"]["input_tokens_details"]
    assert (details["image_tokens"], details["cached_tokens"]) == (512, 302)
    assert details["cached_tokens_details"] == {"text_tokens": 2, "image_tokens": 300}


# --- files -------------------------------------------------------------------------------


def test_several_image_array_parts_recorded_in_order(client: TestClient, state: SimState) -> None:
    sources = [make_png(32, 32, f"src {i}") for i in range(3)]
    files = [image_part(data, f"s{i}.png", "image[]") for i, data in enumerate(sources)]
    files.append(("mask", ("mask.png", sources[0], "application/octet-stream")))
    response = edit(client, {"model": "gpt-image-2", "prompt": "merge", "n": "1"}, files, OFFICIAL)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["input_tokens_details"]["image_tokens"] == 3 * 256
    body = state.calls[0].body
    assert body["model"] == "gpt-image-2"
    assert body["prompt"] == "merge"
    assert body["n"] == "1"  # recorded as sent: a string
    assert body["files"] == [
        {
            "field": field,
            "filename": name,
            "content_type": content_type,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        for field, (name, data, content_type) in files
    ]


def test_repeated_image_parts(client: TestClient, state: SimState) -> None:
    files = [image_part(SOURCE, "a.png"), image_part(JPEG, "b.jpg"), image_part(WEBP, "c.webp")]
    response = edit(client, {"model": "gpt-image-2-vip", "prompt": "p"}, files)
    assert response.status_code == 200, response.text
    recorded = state.calls[0].body["files"]
    assert [(f["field"], f["filename"]) for f in recorded] == [
        ("image", "a.png"),
        ("image", "b.jpg"),
        ("image", "c.webp"),
    ]


def test_sixteen_images_ok_seventeen_rejected(client: TestClient) -> None:
    fields = {"model": "gpt-image-2", "prompt": "p"}
    sixteen = [image_part(field="image[]")] * 16
    assert edit(client, fields, sixteen).status_code == 200
    message = assert_error(
        edit(client, fields, [*sixteen, image_part(field="image[]")]), 400, "image"
    )
    assert "16" in message


@pytest.mark.parametrize(
    "files",
    [
        [],
        [image_part(field="image"), image_part(field="image[]")],
        [("mask", ("mask.png", SOURCE, "image/png"))],
    ],
    ids=["none", "mixed-fields", "mask-only"],
)
def test_image_count_and_field_rules(client: TestClient, files: Files) -> None:
    fields = {"model": "gpt-image-2", "prompt": "p"}
    if not files:
        # httpx2 only sends multipart with at least one file part; force it like the SDK does.
        response = client.post(
            EDITS,
            content=b"--b\r\nContent-Disposition: form-data; name=model\r\n\r\ngpt-image-2\r\n"
            b"--b\r\nContent-Disposition: form-data; name=prompt\r\n\r\np\r\n--b--\r\n",
            headers=auth(OFFICIAL) | {"Content-Type": "multipart/form-data; boundary=b"},
        )
    else:
        response = edit(client, fields, files, OFFICIAL)
    assert_error(response, 400, "image")


@pytest.mark.parametrize(
    "data",
    [b"this is not an image", b"", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, b"GIF89a" + b"\x00" * 20],
    ids=["text", "empty", "png-signature-without-ihdr", "gif"],
)
def test_non_image_rejected_by_content(client: TestClient, state: SimState, data: bytes) -> None:
    files = [image_part(SOURCE, "ok.png", "image[]"), image_part(data, "cat.png", "image[]")]
    response = edit(client, {"model": "gpt-image-2", "prompt": "p"}, files, OFFICIAL)
    message = assert_error(response, 400, "image", "invalid_image_format")
    assert "image[1]" in message
    assert not state.files


@pytest.mark.parametrize(
    ("token", "model"),
    [
        (OFFICIAL, "gpt-image-2"),
        (ENTERPRISE, "gpt-image-2"),
        (OFFICIAL, "gpt-image-2.5-sunburst"),
        (ENTERPRISE, "gpt-image-2.5-flare"),
        (OFFICIAL, "gpt-image-2.6-flare"),
        (ENTERPRISE, "gpt-image-2.6-sunburst"),
    ],
)
def test_mask_accepted(client: TestClient, token: str, model: str) -> None:
    files = [image_part(), ("mask", ("m.png", make_png(64, 64, "mask"), "image/png"))]
    response = edit(client, {"model": model, "prompt": "p"}, files, token)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "model",
    [
        "gpt-image-2",
        "gpt-image-2-vip",
        "gpt-image-2.5-flare-vip",
        "gpt-image-2.5-sunburst-vip",
        "gpt-image-2.5-web",
    ],
)
def test_mask_refused_on_per_call_routes(client: TestClient, model: str) -> None:
    files = [image_part(), ("mask", ("m.png", SOURCE, "image/png"))]
    assert_error(edit(client, {"model": model, "prompt": "p"}, files), 400, "mask")


@pytest.mark.parametrize(
    ("mask", "code"),
    [
        (make_png(64, 32, "mask"), "invalid_value"),  # size differs from the first image
        (JPEG, "invalid_image_format"),  # not a PNG
        (b"not a png at all", "invalid_image_format"),
    ],
    ids=["size", "jpeg", "text"],
)
def test_mask_rejected(client: TestClient, mask: bytes, code: str) -> None:
    files = [image_part(), ("mask", ("m.png", mask, "image/png"))]
    response = edit(client, {"model": "gpt-image-2", "prompt": "p"}, files, OFFICIAL)
    message = assert_error(response, 400, "mask", code)
    if code == "invalid_value":
        assert "64x32" in message and "64x64" in message


def test_mask_size_unchecked_when_first_image_is_not_png(client: TestClient) -> None:
    files = [image_part(JPEG, "a.jpg"), ("mask", ("m.png", make_png(7, 9, "m"), "image/png"))]
    assert edit(client, {"model": "gpt-image-2", "prompt": "p"}, files, OFFICIAL).status_code == 200


@pytest.mark.parametrize(
    ("files", "param"),
    [
        ([image_part(), ("markup", ("m.png", SOURCE, "image/png"))], "markup"),
        ([image_part(), ("prompt", ("p.txt", b"a cat", "text/plain"))], "prompt"),
        ([image_part(), image_part(field="mask"), image_part(field="mask")], "mask"),
    ],
)
def test_unexpected_file_parts(client: TestClient, files: Files, param: str) -> None:
    assert_error(edit(client, {"model": "gpt-image-2", "prompt": "p"}, files, OFFICIAL), 400, param)


def test_file_field_sent_as_text(client: TestClient) -> None:
    fields = {"model": "gpt-image-2", "prompt": "p", "image": "iVBORw0KGgo="}
    response = edit(client, fields, [image_part(field="image[]")], OFFICIAL)
    assert_error(response, 400, "image", "invalid_type")


# --- body shape, auth, routing, faults ----------------------------------------------------


def test_edits_must_be_multipart(client: TestClient, state: SimState) -> None:
    body = {"model": "gpt-image-2", "prompt": "p"}
    as_json = client.post(EDITS, json=body, headers=auth())
    assert_error(as_json, 400, None, "invalid_content_type")
    as_form = client.post(EDITS, data=body, headers=auth())  # urlencoded: no files
    assert_error(as_form, 400, None, "invalid_content_type")
    broken = client.post(
        EDITS,
        content=b"--b\r\nnonsense",
        headers=auth() | {"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert broken.status_code == 400
    assert state.calls[0].body == body  # non-multipart bodies are recorded as sent


def test_bad_token_is_401_and_recorded(client: TestClient, state: SimState) -> None:
    response = edit(client, {"model": "gpt-image-2", "prompt": "p"}, token="sk-nope")
    assert_error(response, 401, None, "invalid_api_key")
    call = state.calls[0]
    assert (call.path, call.group, call.status) == (EDITS, None, 401)
    assert call.body["files"][0]["sha256"] == hashlib.sha256(SOURCE).hexdigest()


@pytest.mark.parametrize(
    ("token", "model"),
    [(DEFAULT, "sora_image"), (DEFAULT, "gpt-4o-image"), (OFFICIAL, "gpt-image-2-vip")],
)
def test_wrong_route_is_503(client: TestClient, token: str, model: str) -> None:
    response = edit(client, {"model": model, "prompt": "p"}, token=token)
    message = assert_error(response, 503, None, "model_not_found")
    assert message.startswith(f"No available channel for model {model}")


def test_model_and_prompt_required(client: TestClient) -> None:
    assert_error(edit(client, {"prompt": "p"}), 400, "model", "missing_required_parameter")
    assert_error(edit(client, {"model": "", "prompt": "p"}), 400, "model")
    assert_error(edit(client, {"model": "gpt-image-2"}, token=OFFICIAL), 400, "prompt")
    assert_error(
        edit(client, {"model": "gpt-image-2", "prompt": ""}, token=OFFICIAL), 400, "prompt"
    )


def test_duplicate_text_field(client: TestClient, state: SimState) -> None:
    parts = [("prompt", (None, b"one")), ("prompt", (None, b"two")), image_part()]
    response = client.post(EDITS, data={"model": "gpt-image-2"}, files=parts, headers=auth())
    assert_error(response, 400, "prompt")
    assert state.calls[0].body["prompt"] == ["one", "two"]


@pytest.mark.parametrize("status", [429, 502])
def test_status_directive_from_prompt(client: TestClient, status: int) -> None:
    # Faults win over validation: the unknown field and the bad image would be 400s.
    fields = {"model": "gpt-image-2", "prompt": f"x [sim:status={status}]", "bogus": "1"}
    response = edit(client, fields, [image_part(b"junk")])
    assert_error(response, status, None)
    assert (response.headers.get("retry-after") == "1") == (status == 429)


def test_refuse_and_garbage_directives(client: TestClient, state: SimState) -> None:
    refused = edit(client, {"model": "gpt-image-2", "prompt": "x [sim:refuse]"}, token=OFFICIAL)
    assert_error(refused, 400, None, "moderation_blocked")
    garbage = edit(client, {"model": "gpt-image-2", "prompt": "x [sim:garbage]"}, token=OFFICIAL)
    assert garbage.headers["content-type"].startswith("text/html")
    assert not state.files


def test_b64_directives_apply_to_edits(client: TestClient) -> None:
    as_url = edit(client, {"model": "gpt-image-2-vip", "prompt": "x [sim:b64url]"})
    assert set(as_url.json()["data"][0]) == {"url"}
    fields = {"model": "gpt-image-2", "prompt": "x [sim:b64only]", "response_format": "url"}
    as_b64 = edit(client, fields, token=OFFICIAL)
    assert set(as_b64.json()["data"][0]) == {"b64_json"}


# --- string coercion ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "param", "code"),
    [
        ({"n": "2.0"}, "n", "invalid_type"),
        ({"n": " 2"}, "n", "invalid_type"),
        ({"n": "02"}, "n", "invalid_type"),
        ({"n": "two"}, "n", "invalid_type"),
        ({"n": ""}, "n", "invalid_type"),  # what the SDK sends for n=None
        ({"n": "0"}, "n", "invalid_value"),
        ({"n": "11"}, "n", "invalid_value"),
        ({"output_format": "jpeg", "output_compression": "5e1"}, "output_compression", None),
        ({"output_format": "jpeg", "output_compression": "101"}, "output_compression", None),
        ({"stream": "True"}, "stream", "invalid_type"),
        ({"stream": "1"}, "stream", "invalid_type"),
        ({"stream": "false"}, "stream", "invalid_value"),
        ({"partial_images": "x"}, "partial_images", "invalid_type"),
        ({"partial_images": "4"}, "partial_images", "invalid_value"),
        ({"size": ""}, "size", "invalid_value"),
        ({"quality": "hd"}, "quality", "invalid_value"),
        ({"input_fidelity": "medium"}, "input_fidelity", "invalid_value"),
        ({"style": "vivid"}, "style", "unknown_parameter"),
    ],
)
def test_string_coercion_errors(
    client: TestClient, extra: dict[str, str], param: str, code: str | None
) -> None:
    fields = {"model": "gpt-image-2", "prompt": "p"} | extra
    assert_error(edit(client, fields, token=OFFICIAL), 400, param, code)


def test_partial_images_without_stream_is_ignored(client: TestClient) -> None:
    fields = {"model": "gpt-image-2", "prompt": "p", "partial_images": "2"}
    response = edit(client, fields, token=OFFICIAL)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"


# --- streaming ---------------------------------------------------------------------------


def test_generation_stream_events(client: TestClient, state: SimState) -> None:
    body = {
        "model": "gpt-image-2",
        "prompt": "a fox",
        "size": "1536x1024",
        "quality": "low",
        "stream": True,
        "partial_images": 2,
        "n": 2,
    }
    response = client.post(IMAGES, json=body, headers=auth(OFFICIAL))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    partial, completed = "image_generation.partial_image", "image_generation.completed"
    assert [e["type"] for e in events] == [partial, partial, completed] * 2
    assert [e.get("partial_image_index") for e in events] == [0, 1, None] * 2
    for event in events:
        assert event["size"] == "1536x1024"
        assert (event["quality"], event["background"], event["output_format"]) == (
            "low",
            "opaque",
            "png",
        )
        assert isinstance(event["created_at"], int)
        assert ("usage" in event) == (event["type"] == completed)
    images = [base64.b64decode(e["b64_json"], validate=True) for e in events]
    # Partials are coarser drafts of the same aspect; the completed image is the full one.
    assert [png_size(image) for image in images] == [(384, 256), (768, 512), (1536, 1024)] * 2
    assert images[2] == make_png(1536, 1024, "a fox", "gpt-image-2")
    assert images[5] == make_png(1536, 1024, "a fox\x001", "gpt-image-2")
    single = client.post(IMAGES, json=body | {"stream": True, "n": 1}, headers=auth(OFFICIAL))
    assert parse_sse(single.text)[-1]["usage"] == events[2]["usage"]
    assert state.calls[0].status == 200


def test_generation_stream_without_partials(client: TestClient) -> None:
    body = {"model": "gpt-image-2", "prompt": "a fox", "stream": True, "response_format": "url"}
    events = parse_sse(client.post(IMAGES, json=body, headers=auth(OFFICIAL)).text)
    assert [e["type"] for e in events] == ["image_generation.completed"]
    # Streams carry base64 whatever response_format says, standard padded base64 at that.
    assert base64.b64decode(events[0]["b64_json"], validate=True) == make_png(
        1024, 1024, "a fox", "gpt-image-2"
    )
    assert events[0]["quality"] == "medium"


def test_edit_stream_events(client: TestClient) -> None:
    fields = {"model": "gpt-image-2", "prompt": "redo", "stream": "true", "partial_images": "1"}
    response = edit(client, fields, [image_part(field="image[]")], OFFICIAL)
    assert response.status_code == 200, response.text
    events = parse_sse(response.text)
    assert [e["type"] for e in events] == ["image_edit.partial_image", "image_edit.completed"]
    final = base64.b64decode(events[1]["b64_json"], validate=True)
    assert final == make_png(1024, 1024, edit_seed("redo"), "gpt-image-2")
    assert events[1]["usage"]["input_tokens_details"]["image_tokens"] == 256


@pytest.mark.parametrize(
    ("token", "model"),
    [
        (DEFAULT, "gpt-image-2"),
        (DEFAULT, "gpt-image-2-vip"),
        (DEFAULT, "gpt-image-2.5-flare-vip"),
        (DEFAULT, "gpt-image-2.5-web"),
        (OFFICIAL, "gpt-image-2.5-sunburst"),
        (ENTERPRISE, "gpt-image-2.6-flare"),
    ],
)
@pytest.mark.parametrize("extra", [{"stream": True}, {"partial_images": 1}])
def test_only_gpt_image_2_official_streams(
    client: TestClient, token: str, model: str, extra: dict[str, Any]
) -> None:
    ((param, value),) = extra.items()
    body = {"model": model, "prompt": "p"} | extra
    generation = client.post(IMAGES, json=body, headers=auth(token))
    message = assert_error(generation, 400, param, "unsupported_parameter")
    assert "does not stream" in message
    form_value = "true" if value is True else str(value)
    edited = edit(client, {"model": model, "prompt": "p", param: form_value}, token=token)
    assert_error(edited, 400, param, "unsupported_parameter")


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"stream": False}, "stream"),
        ({"stream": "true"}, "stream"),
        ({"stream": None}, "stream"),
        ({"stream": True, "partial_images": 4}, "partial_images"),
        ({"stream": True, "partial_images": True}, "partial_images"),
    ],
)
def test_generation_stream_options_strict(
    client: TestClient, extra: dict[str, Any], param: str
) -> None:
    response = client.post(
        IMAGES, json={"model": "gpt-image-2", "prompt": "p"} | extra, headers=auth(OFFICIAL)
    )
    assert_error(response, 400, param)


def test_stream_events_arrive_one_by_one(server: tuple[str, SimState]) -> None:
    url, _ = server
    body = {"model": "gpt-image-2", "prompt": "timed", "stream": True, "partial_images": 3}
    arrivals: list[float] = []
    start = time.perf_counter()
    with (
        httpx2.Client(base_url=url, headers=auth(OFFICIAL), timeout=10) as http,
        http.stream("POST", IMAGES, json=body) as response,
    ):
        for line in response.iter_lines():
            if line.startswith("event: "):
                arrivals.append(time.perf_counter() - start)
    assert len(arrivals) == 4
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert all(gap >= 0.005 for gap in gaps), gaps


# --- [sim:cut] ---------------------------------------------------------------------------


def test_cut_mid_stream_over_a_real_socket(server: tuple[str, SimState]) -> None:
    url, state = server
    state.reset()
    body = {"model": "gpt-image-2", "prompt": "x [sim:cut]", "stream": True, "partial_images": 2}
    lines: list[str] = []
    with (
        httpx2.Client(base_url=url, headers=auth(OFFICIAL), timeout=10) as http,
        http.stream("POST", IMAGES, json=body) as response,
    ):
        assert response.status_code == 200
        with pytest.raises(httpx2.RemoteProtocolError, match="incomplete chunked read"):
            for line in response.iter_lines():
                lines.append(line)
    events = parse_sse("\n".join(lines) + "\n")
    assert [e["type"] for e in events] == ["image_generation.partial_image"]
    assert [c.status for c in state.calls] == [200]  # the headers had gone out


def test_cut_edit_stream_after_first_event(server: tuple[str, SimState]) -> None:
    url, _ = server
    fields = {"model": "gpt-image-2", "prompt": "x [sim:cut]", "stream": "true"}
    lines: list[str] = []
    with (
        httpx2.Client(base_url=url, headers=auth(OFFICIAL), timeout=10) as http,
        http.stream("POST", EDITS, data=fields, files=[image_part()]) as response,
        pytest.raises(httpx2.RemoteProtocolError),
    ):
        for line in response.iter_lines():
            lines.append(line)
    assert [e["type"] for e in parse_sse("\n".join(lines) + "\n")] == ["image_edit.completed"]


@pytest.mark.parametrize("path", [IMAGES, EDITS])
def test_cut_without_stream_resets_the_connection(server: tuple[str, SimState], path: str) -> None:
    url, state = server
    state.reset()
    fields = {"model": "gpt-image-2", "prompt": "x [sim:cut]"}
    with httpx2.Client(base_url=url, headers=auth(), timeout=10) as http:
        with pytest.raises(httpx2.RemoteProtocolError, match="without sending a response"):
            if path == IMAGES:
                http.post(path, json=fields)
            else:
                http.post(path, data=fields, files=[image_part()])
        # The server is still fine afterwards.
        assert http.post(IMAGES, json={"model": "gpt-image-2", "prompt": "ok"}).status_code == 200
    assert [c.status for c in state.calls] == [0, 200]  # 0: never answered


def test_cut_in_process_raises(client: TestClient) -> None:
    # Without a socket to drop (the in-process TestClient), the fault surfaces as an exception.
    with pytest.raises(ConnectionCut):
        client.post(IMAGES, json={"model": "gpt-image-2", "prompt": "[sim:cut]"}, headers=auth())
