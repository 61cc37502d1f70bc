"""Errors: the OpenAI shape, the status the SDK expects, nothing upstream for bad input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2
import openai
import pytest

from .conftest import GROUP_KEYS, Gateway, Sim


def assert_openai_error(body: Any, code: str | None = None) -> dict[str, Any]:
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code
    text = str(body)
    assert not any(key in text for key in GROUP_KEYS.values()), "an upstream key leaked"
    assert "Traceback" not in text
    return dict(error)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"model": "gpt-image-2", "n": 0}, "n"),
        ({"model": "gpt-image-2", "n": 11}, "n"),
        ({"model": "gpt-image-2", "size": "256x256"}, "size"),
        ({"model": "gpt-image-2", "size": "big"}, "size"),
        ({"model": "gpt-image-2", "quality": "hd"}, "quality"),
        ({"model": "gpt-image-2", "quality": "ultra"}, "quality"),
        ({"model": "gpt-image-2", "output_compression": 50}, "output_compression"),
        (
            {"model": "gpt-image-2", "output_compression": 101, "output_format": "jpeg"},
            "output_compression",
        ),
        (
            {"model": "gpt-image-2", "background": "transparent", "output_format": "jpeg"},
            "background",
        ),
        ({"model": "gpt-image-2", "output_format": "gif"}, "output_format"),
        ({"model": "gpt-image-2", "size": "1000x1000"}, "size"),  # not divisible by 16
        ({"model": "gpt-image-2", "size": "3840x1024"}, "size"),  # more than 3:1
        ({"model": "gpt-image-2", "size": "512x512"}, "size"),  # too few pixels
        ({"model": "gpt-image-2", "size": "4096x2304"}, "size"),  # too large
        ({"model": "gpt-image-2", "quality": "xhigh"}, "quality"),
        ({"model": "gpt-image-2", "response_format": "png"}, "response_format"),
    ],
)
def test_bad_input_is_a_400_and_nothing_goes_upstream(
    client: openai.OpenAI, sim: Sim, kwargs: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(prompt="p", **kwargs)
    error = assert_openai_error(caught.value.body and {"error": caught.value.body})
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert sim.sent() == []


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"model": "gpt-image-2"}, "prompt", "missing_required_parameter"),
        ({"model": "gpt-image-2", "prompt": ""}, "prompt", "invalid_value"),
        ({"model": "gpt-image-2", "prompt": 42}, "prompt", "invalid_value"),
        ({"model": "gpt-image-2", "prompt": "p", "colour": "red"}, "colour", "unknown_parameter"),
        ({"model": "gpt-image-2", "prompt": "p", "n": "three"}, "n", "invalid_value"),
        ({"model": "gpt-image-2", "prompt": "p", "stream": "yes"}, "stream", "invalid_value"),
        ({"model": "gpt-4o-image", "prompt": "x" * 32001}, "prompt", None),
    ],
)
def test_malformed_json_fields(
    gateway: Gateway, sim: Sim, body: dict[str, Any], param: str, code: str | None
) -> None:
    with gateway.http() as http:
        response = http.post("/v1/images/generations", json=body)
    assert response.status_code == 400
    error = assert_openai_error(response.json(), code)
    assert error["param"] == param
    assert sim.sent() == []


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b""])
def test_body_that_is_not_a_json_object(gateway: Gateway, sim: Sim, content: bytes) -> None:
    with gateway.http() as http:
        response = http.post(
            "/v1/images/generations", content=content, headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    assert_openai_error(response.json())
    assert sim.sent() == []


def test_unknown_model_is_404_model_not_found(client: openai.OpenAI, sim: Sim) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.images.generate(model="dall-e-9", prompt="p")
    assert caught.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("dall-e-9")
    assert sim.sent() == []


@pytest.mark.parametrize("api_key", ["", "sk-wrong", "sk-team-a-0123456789abcdeX"])
def test_unknown_client_key_is_401(gateway: Gateway, sim: Sim, api_key: str) -> None:
    with gateway.http(api_key=api_key or None) as http:
        response = http.post("/v1/images/generations", json={"prompt": "p"})
        models = http.get("/v1/models")
    assert response.status_code == 401 and models.status_code == 401
    assert_openai_error(response.json(), "invalid_api_key")
    assert response.headers["x-request-id"].startswith("req_")
    assert sim.sent() == []


def test_sdk_raises_authentication_error(gateway: Gateway) -> None:
    with pytest.raises(openai.AuthenticationError):
        gateway.sdk(api_key="sk-nope").images.generate(prompt="p")


def test_second_client_key_works(gateway: Gateway) -> None:
    from .conftest import OTHER_CLIENT_KEY

    assert gateway.sdk(api_key=OTHER_CLIENT_KEY).models.list().data


@pytest.mark.parametrize(
    ("prompt", "error", "status", "code"),
    [
        ("[sim:status=500]", openai.InternalServerError, 502, "upstream_error"),
        ("[sim:status=503]", openai.InternalServerError, 502, "upstream_error"),
        ("[sim:status=429]", openai.RateLimitError, 429, "rate_limit_exceeded"),
        ("[sim:status=504]", openai.InternalServerError, 504, "upstream_timeout"),
        ("[sim:garbage]", openai.InternalServerError, 502, "bad_upstream_response"),
        ("[sim:refuse]", openai.BadRequestError, 400, "moderation_blocked"),
    ],
)
def test_upstream_faults_become_clear_errors(
    client: openai.OpenAI, prompt: str, error: type[openai.APIStatusError], status: int, code: str
) -> None:
    with pytest.raises(error) as caught:
        client.images.generate(model="gpt-image-2-enterprise", prompt=prompt)
    assert caught.value.status_code == status
    body = assert_openai_error({"error": caught.value.body}, code)
    assert body["message"]
    if status == 429:
        assert caught.value.response.headers["retry-after"] == "1"


def test_chat_answer_without_an_image_carries_the_upstreams_words(
    client: openai.OpenAI, sim: Sim
) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client.images.generate(model="sora_image", prompt="[sim:refuse] something")
    assert caught.value.status_code == 502
    assert caught.value.code == "no_image"
    assert "content policy" in caught.value.message
    # A refusal would be refused again: the SDK is told not to retry (and pay) again.
    assert caught.value.response.headers["x-should-retry"] == "false"


def test_upstream_timeout_is_504(make_gateway: Callable[..., Gateway], sim: Sim) -> None:
    gateway = make_gateway(upstream_timeout_s=0.3)
    with pytest.raises(openai.InternalServerError) as caught:
        gateway.sdk().images.generate(model="gpt-image-2-web", prompt="[sim:sleep=2]")
    assert caught.value.status_code == 504
    assert caught.value.response.headers["x-should-retry"] == "false"


def test_unreachable_upstream_is_502(make_gateway: Callable[..., Gateway]) -> None:
    gateway = make_gateway(upstream_url="http://127.0.0.1:9/v1")
    with pytest.raises(openai.InternalServerError) as caught:
        gateway.sdk().images.generate(model="gpt-image-2-web", prompt="p")
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_unreachable"


def test_wrong_upstream_key_is_a_gateway_fault_not_the_clients(
    make_gateway: Callable[..., Gateway], sim: Sim
) -> None:
    gateway = make_gateway(key_default="sk-revoked-upstream-key")
    with pytest.raises(openai.InternalServerError) as caught:
        gateway.sdk().images.generate(model="gpt-image-2-web", prompt="p")
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_auth_failed"
    assert "sk-revoked-upstream-key" not in caught.value.response.text


def test_a_route_in_the_wrong_group_fails_clearly(
    make_gateway: Callable[..., Gateway], sim: Sim
) -> None:
    # An operator who put the OpenAI Official key where the default group's belongs: the upstream
    # has no sora_image channel in that group, and the client gets a 502, not a confusing 4xx.
    # (The reverse mistake cannot be caught: gpt-image-2 exists in both groups.)
    gateway = make_gateway(key_default=GROUP_KEYS["OpenAI Official"])
    with pytest.raises(openai.InternalServerError) as caught:
        gateway.sdk().images.generate(model="sora_image", prompt="p")
    assert caught.value.status_code == 502
    assert "No available channel" in caught.value.message
    assert GROUP_KEYS["OpenAI Official"] not in caught.value.response.text


def test_unknown_path_is_an_openai_404(gateway: Gateway) -> None:
    with gateway.http() as http:
        response = http.get("/v1/nothing-here")
    assert response.status_code == 404
    assert_openai_error(response.json())


def test_method_not_allowed_is_openai_shaped(gateway: Gateway) -> None:
    with gateway.http() as http:
        response = http.get("/v1/images/generations")
    assert response.status_code == 405
    assert_openai_error(response.json())


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("OPTIONS", "/v1/videos", "GET, POST"),
        ("OPTIONS", "/v1/videos/video_x", "DELETE, GET"),
        ("POST", "/v1/videos/video_x", "DELETE, GET"),
        ("PUT", "/v1/videos/video_x", "DELETE, GET"),
    ],
)
def test_405_allow_lists_every_method_of_the_path(
    gateway: Gateway, method: str, path: str, allowed: str
) -> None:
    # Two routes share each of these paths (list and create, retrieve and delete): the Allow of
    # a 405 names the methods of both, not only those of the first route the router tried.
    with gateway.http() as http:
        response = http.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert allowed in response.json()["error"]["message"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK's Sora warning
def test_openai_video_endpoints_not_served_are_404s_naming_what_to_use(
    client: openai.OpenAI, sim: Sim
) -> None:
    """Both SDKs have videos.edit, .extend, .create_character and .get_character; their paths
    look like a video id's (POST /v1/videos/edits), which was a 405 saying the path takes GET.
    Now a 404 unsupported_endpoint saying what mediagate offers instead."""
    clip = ("clip.mp4", b"\x00\x00\x00\x18ftypmp42", "video/mp4")
    calls: list[tuple[Callable[[], Any], str, str]] = [
        (
            lambda: client.videos.edit(prompt="p", video=clip),
            "POST /v1/videos/edits",
            "POST /v1/videos/{video_id}/remix",
        ),
        (
            lambda: client.videos.extend(prompt="p", seconds="8", video=clip),
            "POST /v1/videos/extensions",
            "muse-video-20s",
        ),
        (
            lambda: client.videos.create_character(name="Ada", video=clip),
            "POST /v1/videos/characters",
            "input_reference",
        ),
        (
            lambda: client.videos.get_character("char_1"),
            "GET /v1/videos/characters/char_1",
            "input_reference",
        ),
    ]
    for call, where, instead in calls:
        with pytest.raises(openai.NotFoundError) as caught:
            call()
        assert caught.value.code == "unsupported_endpoint", where
        assert f"mediagate does not offer {where}: " in caught.value.message
        assert instead in caught.value.message
        assert "allow" not in caught.value.response.headers
    # The client's part of the path is quoted bounded, like any other unserved path's.
    with pytest.raises(openai.NotFoundError) as caught:
        client.videos.get_character("c" * 5000)
    assert len(caught.value.message) < 600
    assert sim.sent() == []


def test_error_responses_carry_a_request_id(gateway: Gateway) -> None:
    response = httpx2.post(f"{gateway.url}/v1/images/generations", json={})
    assert response.status_code == 401
    assert response.headers["x-request-id"].startswith("req_")
