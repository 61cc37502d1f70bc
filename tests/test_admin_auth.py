"""Who may call the admin API (/admin/v1): admin and viewer keys by digest, the older
MEDIAGATE_ADMIN_KEY as one admin, a client key as a member of its team."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mediagate.accounting.clients import admin_keys
from mediagate.gateway import ConfigError, check_config
from mediagate.settings import Settings

from .conftest import CLIENT_KEY, Gateway

ADMIN = "mga-admin-0123456789"
VIEWER = "mga-viewer-0123456789"


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def test_each_kind_of_caller_is_told_who_it_is(
    make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    keys_file = tmp_path / "keys.yaml"
    keys_file.write_text(
        f"keys:\n  - name: designer\n    team: marketing\n    sha256: {sha('sk-designer-1')}\n"
    )
    gw = make_gateway(
        admin_keys=f"ops:admin:{sha(ADMIN)}, auditor:viewer:{sha(VIEWER)}",
        admin_key="legacy-admin-key",
        keys_file=keys_file,
    )

    def whoami(key: str | None) -> tuple[int, dict[str, object]]:
        with gw.http(key) as http:
            answer = http.get("/admin/v1/whoami")
            return answer.status_code, answer.json()

    assert whoami(ADMIN) == (
        200,
        {"object": "admin.principal", "name": "ops", "role": "admin", "team": None},
    )
    assert whoami(VIEWER)[1]["role"] == "viewer"
    assert whoami("legacy-admin-key")[1] == {
        "object": "admin.principal",
        "name": "admin",
        "role": "admin",
        "team": None,
    }
    assert whoami("sk-designer-1")[1] == {
        "object": "admin.principal",
        "name": "designer",
        "role": "member",
        "team": "marketing",
    }
    assert whoami(CLIENT_KEY)[1]["team"] is None
    status, body = whoami("sk-nobody")
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    status, body = whoami(None)
    assert status == 401 and "error" in body


def test_admin_keys_are_parsed_strictly() -> None:
    parsed = admin_keys(f"ops:admin:{sha(ADMIN).upper()}", None)
    assert [(k.name, k.role, k.sha256) for k in parsed] == [("ops", "admin", sha(ADMIN))]
    assert admin_keys(None, "x")[0].sha256 == sha("x")  # the older key, kept as its digest
    for bad in ("ops:root:" + sha(ADMIN), "ops:admin:abc", ":admin:" + sha(ADMIN)):
        with pytest.raises(ValueError, match="name:role:sha256"):
            admin_keys(bad, None)


def test_a_bad_admin_keys_setting_stops_the_start(tmp_path: Path) -> None:
    settings = Settings(
        admin_keys="ops:admin:nothex",
        data_dir=tmp_path,
        api_keys="a:sk-a",
        upstream_url="http://u/v1",
    )
    with pytest.raises(ConfigError, match="MEDIAGATE_ADMIN_KEYS"):
        check_config(settings)


def test_an_admin_reloads_the_catalog_through_the_api(
    make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    config = tmp_path / "catalog.yaml"
    config.write_text("models: {}\n")
    gw = make_gateway(
        config=config, admin_keys=f"ops:admin:{sha(ADMIN)},auditor:viewer:{sha(VIEWER)}"
    )

    def reload(key: str) -> Any:
        with gw.http(key) as http:
            return http.post("/admin/v1/catalog/reload")

    def offered() -> set[str]:
        with gw.http() as http:
            return {m["id"] for m in http.get("/v1/models").json()["data"]}

    assert "heron" not in offered()
    config.write_text("models:\n  heron:\n    routes: [gpt-image-2.web]\n")
    answer = reload(ADMIN)
    assert answer.status_code == 200, answer.text
    assert answer.json()["object"] == "catalog.reload" and answer.json()["models"] > 1
    assert "heron" in offered()  # in force for the next request

    config.write_text("models:\n  heron:\n    routes: [no-such-route]\n")
    refused = reload(ADMIN)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "catalog_invalid"
    assert "heron" in offered()  # the catalog in force is kept
    for key in (VIEWER, CLIENT_KEY):
        assert reload(key).status_code == 403
