"""Every error answer carries a stable, documented code (issue 14, item 15)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx2

from .conftest import Gateway, assert_error
from .test_edits import PNG_SMALL

DOCS = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def _documented_codes() -> set[str]:
    table = DOCS.read_text().split("### Error codes", 1)[1]
    return set(re.findall(r"^\| `([a-z_]+)`", table, re.M)) | set(
        re.findall(
            r"`([a-z_]+)`", "".join(re.findall(r"^\| `[a-z_]+`(?:, `[a-z_]+`)+", table, re.M))
        )
    )


def _cases(http: httpx2.Client) -> dict[str, httpx2.Response]:
    return {
        "bad json": http.post(
            "/v1/images/generations",
            content=b"{not json",
            headers={"content-type": "application/json"},
        ),
        "mask on a maskless route": http.post(
            "/v1/images/edits",
            data={"model": "gpt-image-2-web", "prompt": "e"},
            files=[
                ("image", ("a.png", PNG_SMALL, "image/png")),
                ("mask", ("m.png", PNG_SMALL, "image/png")),
            ],
        ),
        "bad list limit": http.get("/v1/videos", params={"limit": "0"}),
        "bad list order": http.get("/v1/videos", params={"order": "sideways"}),
        "bad content variant": http.get(
            "/v1/videos/video_123/content", params={"variant": "poster"}
        ),
        "unknown route": http.get("/v1/nothing-here"),
        "wrong method": http.delete("/v1/images/generations"),
        "not an object": http.post("/v1/images/generations", json=[1]),
        "bad days": http.get("/v1/usage", params={"days": "0"}),
        "compression without jpeg": http.post(
            "/v1/images/generations",
            json={"model": "gpt-image-2", "prompt": "p", "output_compression": 50},
        ),
    }


def test_every_error_has_a_stable_documented_code(gateway: Gateway) -> None:
    documented = _documented_codes()
    with gateway.http() as http:
        answers = _cases(http)
    for case, response in answers.items():
        assert 400 <= response.status_code < 500, (case, response.status_code, response.text)
        error = response.json()["error"]
        assert error["code"], (case, error)
        assert error["code"] in documented, (case, error["code"])


def test_an_empty_content_variant_is_a_400_like_any_bad_variant(gateway: Gateway) -> None:
    # Schemathesis found it: `?variant=` (a value, empty) was taken for no variant at all and
    # served the video, while `?order=` and `?limit=` are 400s. Checked before the id is.
    with gateway.http() as http:
        response = http.get("/v1/videos/video_123/content", params={"variant": ""})
    assert_error(response, 400, "variant", "invalid_value")


PACKAGE = Path(__file__).resolve().parent.parent / "mediagate"
# Where a code is written: `code="..."` (an error raised, a default), `code = "..."` (an error
# class's own), `"code": "..."` (an error object built by hand). The simulator is the upstream's
# imitation, not the gateway: its codes are the upstream's.
_EMITTED = re.compile(r"""\bcode\s*(?::\s*str\s*)?=\s*"([a-z_]+)"|"code":\s*"([a-z_]+)\"""")


def _emitted_codes() -> dict[str, str]:
    """Every code the gateway's source writes, with a file that writes it."""
    found: dict[str, str] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "simulator" in path.parts:
            continue
        for match in _EMITTED.finditer(path.read_text()):
            found.setdefault(match.group(1) or match.group(2), path.name)
    return found


def test_every_code_the_gateway_emits_is_in_the_table() -> None:
    emitted = _emitted_codes()
    # The scan sees the codes it should (so it can fail): an error class's, a raise's, a dict's.
    assert {"invalid_value", "remix_unsupported", "video_not_ready", "video_expired"} <= set(
        emitted
    )
    missing = {code: where for code, where in emitted.items() if code not in _documented_codes()}
    assert not missing, f"codes emitted but not in docs/api.md's error table: {missing}"
