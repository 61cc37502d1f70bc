"""The gateway's own OpenAPI document (mediagate/http/openapi.yaml, served at /v1/openapi.json):
valid OpenAPI 3.1, served as saved and without a key, exactly the /v1 routes the app serves,
honest about where it departs from the official OpenAI document, and listing the bundled
catalog's models.

The official document is ../shared/openai-openapi/openapi.yaml (or MEDIAGATE_OPENAPI_YAML); the
tests that compare with it are skipped when it is absent.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from fastapi.routing import APIRoute
from openapi_spec_validator import validate

from mediagate.app import create_app
from mediagate.catalog import load_catalog

from .conftest import Gateway, Sim, gateway_settings
from .test_openapi_conformance import _DOCUMENT as OFFICIAL

SAVED = Path(__file__).resolve().parents[1] / "mediagate" / "http" / "openapi.yaml"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# What the copies of official schemas leave out: examples and OpenAI's docs-site metadata.
_LEFT_OUT = ("examples", "x-oaiMeta")


@cache
def saved() -> dict[str, Any]:
    with SAVED.open() as handle:
        document: dict[str, Any] = yaml.safe_load(handle)
    return document


@cache
def official() -> dict[str, Any]:
    assert OFFICIAL is not None
    with OFFICIAL.open() as handle:
        document: dict[str, Any] = yaml.load(handle, Loader=yaml.CSafeLoader)
    return document


needs_official = pytest.mark.skipif(OFFICIAL is None, reason="the official document is absent")


def _template(path: str) -> str:
    """A path with its parameters' names (and Starlette's `:path` converters) blanked."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def _documented() -> set[tuple[str, str]]:
    base = saved()["servers"][0]["url"]
    return {
        (method.upper(), _template(base + path))
        for path, item in saved()["paths"].items()
        for method in item
        if method in METHODS
    }


def test_the_saved_document_is_valid_openapi_3_1() -> None:
    document = saved()
    assert document["openapi"].startswith("3.1.")
    validate(document)  # raises on anything invalid, $refs resolved


def test_every_operation_is_a_route_the_app_serves_and_every_v1_route_is_documented(
    sim: Sim, tmp_path: Path
) -> None:
    app = create_app(gateway_settings(sim, tmp_path))
    served: set[tuple[str, str]] = set()
    for route in app.routes:  # declared on the app itself (mediagate.http.routes: `Routes.declare`)
        assert isinstance(route, APIRoute)
        if route.path.startswith("/v1/"):
            served |= {(method, _template(route.path)) for method in route.methods}
    assert _documented() == served


def test_served_without_a_key_as_saved(gateway: Gateway) -> None:
    with httpx2.Client(base_url=gateway.url) as anonymous:
        first = anonymous.get("/v1/openapi.json")
        again = anonymous.get("/v1/openapi.json")
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "application/json"
    assert first.headers["x-request-id"]
    assert first.json() == saved()
    assert again.content == first.content


def test_the_document_names_every_model_of_the_bundled_catalog() -> None:
    catalog = load_catalog()
    schemas = saved()["components"]["schemas"]
    for kind, schema in (("image", "MediagateImageModel"), ("video", "MediagateVideoModel")):
        models = {
            name
            for name in catalog.models
            if catalog.routes[catalog.model(name).routes[0]].kind == kind
        }
        aliases = {
            name
            for name, alias in catalog.aliases.items()
            if catalog.routes[catalog.model(alias.to).routes[0]].kind == kind
        }
        assert set(schemas[schema]["enum"]) == models | aliases, schema


def _without(value: Any, keys: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        return {k: _without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [_without(v, keys) for v in value]
    return value


@needs_official
def test_official_schemas_are_copied_unchanged_unless_marked() -> None:
    """A schema under an official name is the official one, or says how it differs; the
    schemas mediagate adds are named Mediagate... and marked as its own."""
    theirs = official()["components"]["schemas"]
    for name, schema in saved()["components"]["schemas"].items():
        note = schema.get("x-mediagate")
        if name.startswith("Mediagate"):
            assert note, f"{name}: mediagate's own schema without its x-mediagate note"
            assert name not in theirs
        elif note is None:
            assert name in theirs, f"{name}: not an official schema, and not marked"
            assert schema == _without(theirs[name], _LEFT_OUT), f"{name} differs unmarked"
        else:
            assert name in theirs
            assert isinstance(note, dict) and note.get("differs"), f"{name}: say how it differs"
            assert schema != _without(theirs[name], _LEFT_OUT), f"{name} is marked but the same"


@needs_official
def test_official_operations_keep_their_paths_and_ids() -> None:
    """An operation the official document has keeps its operationId; mediagate's own are
    marked (and tagged `mediagate`)."""
    theirs = {
        (method, path): op.get("operationId")
        for path, item in official()["paths"].items()
        for method, op in item.items()
        if method in METHODS
    }
    for path, item in saved()["paths"].items():
        for method, op in item.items():
            if method not in METHODS:
                continue
            if (method, path) in theirs:
                assert op["operationId"] == theirs[(method, path)], (method, path)
            else:
                assert op.get("x-mediagate") and op["tags"] == ["mediagate"], (method, path)
