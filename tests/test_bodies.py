"""Request bodies are bounded as they arrive and parsed safely (issue 14, items 4 and 7).

Raw httpx2, so the tests choose the exact bytes and the framing (Content-Length or chunked)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx2
import openai
import pytest

from .conftest import Gateway, Sim


def _chunks(head: bytes, filler: bytes, repeat: int, tail: bytes) -> Iterator[bytes]:
    yield head
    for _ in range(repeat):
        yield filler
    yield tail


def _post(gateway: Gateway, path: str, **kwargs: object) -> httpx2.Response:
    with gateway.http() as http:
        try:
            return http.post(path, **kwargs)  # type: ignore[arg-type]
        except httpx2.WriteError as exc:  # pragma: no cover - the answer raced the upload
            raise AssertionError("the gateway hung up without an answer") from exc


def _is_413(response: httpx2.Response) -> None:
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "request_too_large"
    assert error["type"] == "invalid_request_error"
    assert response.headers["x-should-retry"] == "false"


def test_deeply_nested_json_is_a_400_not_a_500(gateway: Gateway, sim: Sim) -> None:
    for depth in (100_000, 40):
        body = b'{"model": "gpt-image-2-web", "prompt": "p", "x": ' + b"[" * depth
        body += b"]" * depth + b"}"
        response = _post(
            gateway,
            "/v1/images/generations",
            content=body,
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "json_too_deep"
    assert sim.sent() == []
    # What an SDK sends nests a few levels at most, and is served as before.
    assert gateway.sdk().images.generate(model="gpt-image-2-web", prompt="p").data


def test_a_json_body_over_the_limit_is_a_413_as_it_arrives(
    make_gateway: Callable[..., Gateway], sim: Sim
) -> None:
    gateway = make_gateway(max_json_bytes=64 * 1024)
    head = b'{"model": "gpt-image-2-web", "prompt": "'
    # Declared: refused before a byte of the body is read.
    _is_413(
        _post(
            gateway,
            "/v1/images/generations",
            content=head + b"a" * 100_000 + b'"}',
            headers={"content-type": "application/json"},
        )
    )
    # Chunked (no Content-Length): refused once the count passes the limit.
    chunked = _chunks(head, b"a" * 16 * 1024, 8, b'"}')
    _is_413(
        _post(
            gateway,
            "/v1/images/generations",
            content=chunked,
            headers={"content-type": "application/json"},
        )
    )
    # The video endpoints read JSON the same way.
    _is_413(
        _post(
            gateway,
            "/v1/videos",
            content=_chunks(b'{"prompt": "', b"a" * 16 * 1024, 8, b'"}'),
            headers={"content-type": "application/json"},
        )
    )
    assert sim.sent() == []
    # Under the limit, served.
    with pytest.raises(openai.NotFoundError):  # an unknown model, but the body was read
        gateway.sdk().images.generate(model="nope", prompt="a" * 60_000)
    assert gateway.sdk().images.generate(model="gpt-image-2-web", prompt="a" * 1000).data


def _multipart(boundary: str, field: str, filler: bytes, repeat: int) -> Iterator[bytes]:
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\np\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="a.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    return _chunks(head, filler, repeat, f"\r\n--{boundary}--\r\n".encode())


@pytest.mark.parametrize(
    ("path", "field", "settings"),
    [
        ("/v1/images/edits", "image", {"edit_max_total_bytes": 64 * 1024}),
        ("/v1/videos", "input_reference", {"video_reference_max_bytes": 64 * 1024}),
    ],
)
def test_a_chunked_upload_over_the_limit_is_a_413_as_it_arrives(
    make_gateway: Callable[..., Gateway], sim: Sim, path: str, field: str, settings: dict[str, int]
) -> None:
    # The limit is the files' cap plus 1 MiB for the form's envelope; this sends 4 MiB.
    gateway = make_gateway(**settings)
    boundary = "mediagate-test-boundary"
    response = _post(
        gateway,
        path,
        content=_multipart(boundary, field, b"\0" * 64 * 1024, 64),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    _is_413(response)
    assert sim.sent() == []
