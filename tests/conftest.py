"""Shared fixtures: a real simulated upstream and real gateways on loopback ports.

Every gateway test talks HTTP: the official `openai` SDK (or httpx2) -> a gateway served by
uvicorn -> the simulator served by uvicorn. Nothing of ours is mocked.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import httpx2
import openai
import pytest
import redis
import yaml
from PIL import Image

from mediagate.app import create_app
from mediagate.catalog import load_catalog
from mediagate.servethread import BackgroundServer
from mediagate.settings import Settings
from mediagate.simulator import DEFAULT_SIM_KEYS, SimConfig, SimState, create_simulator_app

from .processes import free_port

if TYPE_CHECKING:  # Playwright itself is imported by the browser tests' fixture alone
    from playwright.sync_api import Browser, BrowserContext, Page

CLIENT_KEY = "sk-team-a-0123456789abcdef"
OTHER_CLIENT_KEY = "sk-team-b-fedcba9876543210"
GROUP_KEYS = {group: key for key, group in DEFAULT_SIM_KEYS.items()}


@dataclass
class Sim:
    url: str
    port: int
    state: SimState

    def sent(self, path: str | None = None) -> list[Any]:
        """The calls the upstream received (optionally only to one path)."""
        return [c for c in self.state.calls if path is None or c.path == path]


# The tests' clients speak plain HTTP to loopback, yet an httpx (or httpx2) client builds a TLS
# context from certifi's bundle when made (~25 ms): hundreds of clients share this one instead.
CLIENT_TLS = httpx2.create_ssl_context()


@dataclass
class Gateway:
    url: str
    settings: Settings

    def sdk(self, api_key: str = CLIENT_KEY, **kwargs: Any) -> openai.OpenAI:
        # max_retries=0: a test must see the gateway's first answer, not the SDK's retries.
        kwargs.setdefault("http_client", openai.DefaultHttpxClient(verify=CLIENT_TLS))
        return openai.OpenAI(
            base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=60, **kwargs
        )

    def http(self, api_key: str | None = CLIENT_KEY) -> httpx2.Client:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        return httpx2.Client(base_url=self.url, headers=headers, timeout=60, verify=CLIENT_TLS)

    def generate(self, prompt: str, model: str = "gpt-image-2-web", **body: Any) -> httpx2.Response:
        """A plain HTTP image generation (the raw answer, errors included)."""
        with self.http() as http:
            payload = {"model": model, "prompt": prompt, **body}
            return http.post("/v1/images/generations", json=payload)

    def video_from_link(self, url: str, size: str = "720x1280") -> httpx2.Response:
        """A plain HTTP video create whose input_reference is an image link (the raw answer)."""
        with self.http() as http:
            reference = {"image_url": url}
            payload = {"prompt": "from a link", "size": size, "input_reference": reference}
            return http.post("/v1/videos", json=payload)


def decode_image(b64: str | None) -> Image.Image:
    """A b64_json answer's image, checked to be valid base64 of an image."""
    assert b64 is not None
    return Image.open(io.BytesIO(base64.b64decode(b64, validate=True)))


def wait_until(check: Callable[[], bool], timeout_s: float = 5.0, interval_s: float = 0.05) -> None:
    """Polls `check` until it holds; fails the test if it never does within the timeout."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(interval_s)


def wait_for_status(client: httpx2.Client, path: str, status: str) -> dict[str, Any]:
    """The JSON at `path` once its `status` is `status` (a job or task polled directly)."""
    seen: dict[str, Any] = {}

    def reached() -> bool:
        seen.update(client.get(path).json())
        return seen["status"] == status

    wait_until(reached, interval_s=0.02)
    return seen


def assert_error(response: Any, status: int, param: str | None, code: str | None = None) -> str:
    """An OpenAI-shaped error answer with this status, param (and code); its message."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    message: str = error["message"]
    return message


def only_call(sim: Sim) -> Any:
    """The one call the upstream received."""
    calls = sim.sent()
    assert len(calls) == 1, [c.path for c in calls]
    return calls[0]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Settings come from the environment; a developer's own MEDIAGATE_* must not leak in.
    for name in list(os.environ):
        if name.startswith("MEDIAGATE_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def _simulator() -> Iterator[Sim]:
    state = SimState()
    app = create_simulator_app(SimConfig(keys=dict(DEFAULT_SIM_KEYS)), state)
    with BackgroundServer(app) as server:
        yield Sim(server.url, server.port, state)


@pytest.fixture
def sim(_simulator: Sim) -> Sim:
    _simulator.state.reset()
    return _simulator


# The files that talk to the upstream: their gateway tests run on each upstream transport
# (MEDIAGATE_UPSTREAM_TRANSPORT: aiohttp by default, "httpx" httpx2's own pool), in one run.
UPSTREAM_TEST_FILES = frozenset(
    {
        "test_generations",
        "test_edits",
        "test_streaming",
        "test_stream_protocol",
        "test_faults",
        "test_retry",
        "test_retry_policy",
        "test_fallback",
        "test_errors",
        "test_secrets",
        "test_bodies",
        "test_videos",
        "test_accounting",
        "test_upstream_room",
    }
)
OTHER_UPSTREAM_TRANSPORTS = ("httpx",)  # besides the default


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # TEST_UPSTREAM_TRANSPORT=httpx (or aiohttp) puts every gateway of a run on that transport
    # instead.
    module = metafunc.module.__name__.rpartition(".")[2]
    if (
        "upstream_transport" in metafunc.fixturenames
        and module in UPSTREAM_TEST_FILES
        and not os.environ.get("TEST_UPSTREAM_TRANSPORT")
    ):
        transports = [None, *OTHER_UPSTREAM_TRANSPORTS]
        ids = ["default-transport", *OTHER_UPSTREAM_TRANSPORTS]
        metafunc.parametrize("upstream_transport", transports, ids=ids, indirect=True)


@pytest.fixture
def upstream_transport(request: pytest.FixtureRequest) -> str | None:
    """The upstream transport of the test's gateways (None: the settings' default)."""
    param: str | None = getattr(request, "param", None)
    return param or os.environ.get("TEST_UPSTREAM_TRANSPORT") or None


def gateway_settings(
    sim: Sim, data_dir: Path, upstream_transport: str | None = None, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        "upstream_url": f"{sim.url}/v1",
        "key_default": GROUP_KEYS["default"],
        "key_openaiofficial": GROUP_KEYS["OpenAI Official"],
        "key_openaiofficialenterprise": GROUP_KEYS["OpenAI Official Enterprise"],
        "key_seedance2": GROUP_KEYS["SeeDance2"],
        "key_dreamina": GROUP_KEYS["Dreamina"],
        "key_wan": GROUP_KEYS["Wan"],
        "api_keys": f"team-a:{CLIENT_KEY},team-b:{OTHER_CLIENT_KEY}",
        "fetch_allow_hosts": [f"127.0.0.1:{sim.port}"],
        "data_dir": data_dir,
        # The catalog check at start asks every group's /v1/models: off unless a test wants
        # it, so the upstream's calls are the test's own (tests/test_catalog_drift.py).
        "catalog_check_interval_s": 0,
    }
    transport = upstream_transport or os.environ.get("TEST_UPSTREAM_TRANSPORT")
    if transport:
        values["upstream_transport"] = transport
    values.update(overrides)
    return Settings(**values)


# The gateways this test started: stopped at its end, or before a database fixture drops the
# database they write to (pytest tears fixtures down in the reverse order of their set-up, and
# a test may list make_gateway before its database).
RUNNING: list[BackgroundServer] = []


def stop_gateways() -> None:
    while RUNNING:
        RUNNING.pop().stop()


@pytest.fixture
def make_gateway(
    sim: Sim, tmp_path: Path, upstream_transport: str | None
) -> Iterator[Callable[..., Gateway]]:
    """Start a gateway with the test's settings (overrides by field name)."""
    servers = RUNNING

    def make(transport: httpx2.AsyncBaseTransport | None = None, **overrides: Any) -> Gateway:
        """`transport`: the upstream network of the test's own (a mock, a recorder)."""
        overrides.setdefault("upstream_transport", upstream_transport)
        settings = gateway_settings(sim, tmp_path / "data", **overrides)
        app = create_app(settings, upstream_transport=transport)
        server = BackgroundServer(app, header_timeout_s=settings.header_timeout_s).start()
        servers.append(server)
        return Gateway(server.url, settings)

    yield make
    stop_gateways()


@pytest.fixture
def gateway(make_gateway: Callable[..., Gateway]) -> Gateway:
    return make_gateway()


@pytest.fixture
def client(gateway: Gateway) -> openai.OpenAI:
    return gateway.sdk()


# Video job stores. Redis tests run against a real server: the local one on 6379, else a
# redis-server this session starts on a free port. Without either they skip, visibly, except
# under CI (CI=true), where a missing Redis is a failure rather than a silently smaller suite.

LOCAL_REDIS_URL = "redis://127.0.0.1:6379"


def _redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a reachable Redis server."""
    if _redis_answers(LOCAL_REDIS_URL):
        yield LOCAL_REDIS_URL
        return
    binary = shutil.which("redis-server")
    if binary is None:
        reason = "Redis is not reachable at 127.0.0.1:6379 and redis-server is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(
        args,
        cwd=tmp_path_factory.mktemp("redis"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while not _redis_answers(url):
            assert proc.poll() is None, "redis-server exited at start"
            assert time.monotonic() < deadline, "redis-server did not start listening"
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# PostgreSQL: the server on 127.0.0.1:5432 (MEDIAGATE_TEST_POSTGRES_URL to name another), or a
# throwaway one started from the installed binaries; without either, its tests are skipped
# visibly, except under CI, where that is a failure (.ci/run installs and starts one).
LOCAL_POSTGRES_URL = "postgresql://postgres:postgres@127.0.0.1:5432/postgres"


def _postgres_answers(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def _postgres_binaries() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a reachable PostgreSQL server's `postgres` database."""
    url = os.environ.get("MEDIAGATE_TEST_POSTGRES_URL", LOCAL_POSTGRES_URL)
    if _postgres_answers(url):
        yield url
        return
    binaries = _postgres_binaries()
    reason = f"PostgreSQL is not reachable at {url.split('@')[-1]} and initdb is not installed"
    if binaries is None or os.geteuid() == 0:  # initdb refuses to run as root
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    data = tmp_path_factory.mktemp("postgres")
    subprocess.run(
        [str(binaries / "initdb"), "-D", str(data / "db"), "-U", "postgres", "-A", "trust"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            str(binaries / "postgres"),
            "-D",
            str(data / "db"),
            "-p",
            str(port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-k",
            str(data),
            "-c",
            "fsync=off",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    try:
        deadline = time.monotonic() + 20
        while not _postgres_answers(url):
            assert proc.poll() is None, "postgres exited at start"
            assert time.monotonic() < deadline, "postgres did not start listening"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture
def postgres_database(postgres_server: str) -> Iterator[str]:
    """A database of this test's own on the PostgreSQL server (dropped afterwards)."""
    import psycopg

    name = f"mediagate_test_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = postgres_server.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    stop_gateways()  # none may still be writing to the database dropped below
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each engine of the records' database: a SQLite file of this test's own, and a
    PostgreSQL database of its own."""
    if request.param == "postgresql":
        url: str = request.getfixturevalue("postgres_database")
        return url
    return f"sqlite:///{tmp_path / 'records.sqlite3'}"


@pytest.fixture
def replica_store(redis_server: str, postgres_database: str) -> Iterator[dict[str, str]]:
    """Gateway settings for replicas: a PostgreSQL database of this test's own, and Redis
    under a key prefix of its own (removed afterwards)."""
    prefix = f"mediagate-test-{secrets.token_hex(6)}"
    yield {
        "database_url": postgres_database,
        "redis_url": f"{redis_server}/0",
        "store_prefix": prefix,
    }
    client = redis.Redis.from_url(f"{redis_server}/0")
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def job_store(request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings overrides for each deployment's stores: SQLite alone (the default, under
    data_dir), and replicas' PostgreSQL with Redis."""
    if request.param == "postgresql":
        store: dict[str, str] = request.getfixturevalue("replica_store")
        return store
    return {}


# The stores themselves (mediagate.stores.open_stores), on each deployment.


@dataclass(frozen=True)
class StoreUrl:
    kind: Literal["sqlite", "postgresql"]
    database_url: str  # a MEDIAGATE_DATABASE_URL
    redis_url: str | None  # a MEDIAGATE_REDIS_URL (None: coordination in the SQLite file)
    prefix: str  # the Redis key prefix

    def open(self, clock: Callable[[], float] | None = None) -> Any:
        """open_stores on this deployment's stores."""
        from mediagate.stores import open_stores

        extra = {"clock": clock} if clock is not None else {}
        return open_stores(self.database_url, self.prefix, redis_url=self.redis_url, **extra)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> StoreUrl:
    """Each deployment's stores: a SQLite file of this test's own, and PostgreSQL with Redis
    (a database and a key prefix of this test's own, removed afterwards)."""
    if request.param == "postgresql":
        store: dict[str, str] = request.getfixturevalue("replica_store")
        return StoreUrl(
            "postgresql", store["database_url"], store["redis_url"], store["store_prefix"]
        )
    return StoreUrl("sqlite", f"sqlite:///{tmp_path / 'stores.sqlite3'}", None, "unused")


class StoreClock:
    """The clock a store test hands to open_stores, and moves instead of sleeping.

    The SQLite backends read leases, expiry and days from it, so `advance` just moves it. Redis
    reads its own clock (TIME in its scripts, PEXPIRE), which no test can move: there `advance`
    is a real wait, so the TTLs those tests use are kept to a fraction of a second.
    """

    def __init__(self, kind: Literal["sqlite", "postgresql"]) -> None:
        self.kind = kind
        self._now = time.time()  # today, so the days a test books are the real ones

    def __call__(self) -> float:
        return self._now if self.kind == "sqlite" else time.time()

    async def advance(self, seconds: float) -> None:
        if self.kind == "sqlite":
            self._now += seconds
        else:
            await asyncio.sleep(seconds)


@pytest.fixture
def store_clock(store_url: StoreUrl) -> StoreClock:
    return StoreClock(store_url.kind)


def fast_video_polls(path: Path, interval_s: float = 0.05) -> Path:
    """A catalog overlay (MEDIAGATE_CONFIG) giving every video route a short poll interval:
    the bundled ones follow the upstreams (Muse asks for 15 s), which no test waits out."""
    routes = {
        rid: {"video": {"poll_interval_s": interval_s}}
        for rid, route in load_catalog().routes.items()
        if route.kind == "video"
    }
    path.write_text(yaml.safe_dump({"routes": routes}))
    return path


@pytest.fixture
def videos_gw(
    make_gateway: Callable[..., Gateway], job_store: dict[str, str], tmp_path: Path
) -> Gateway:
    """A gateway on each job store whose video answers ask clients to poll quickly."""
    overlay = fast_video_polls(tmp_path / "fast-polls.yaml")
    return make_gateway(video_poll_after_ms=50, config=overlay, **job_store)


# --- The console (/console) -------------------------------------------------------------------

CONSOLE_ADMIN_KEY = "mga-console-admin-0123456789"
CONSOLE_VIEWER_KEY = "mga-console-viewer-0123456789"
_CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
_CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


def console_admin_keys() -> str:
    """MEDIAGATE_ADMIN_KEYS with one admin (`ops`) and one viewer (`auditor`) for the console."""
    admin = hashlib.sha256(CONSOLE_ADMIN_KEY.encode()).hexdigest()
    viewer = hashlib.sha256(CONSOLE_VIEWER_KEY.encode()).hexdigest()
    return f"ops:admin:{admin},auditor:viewer:{viewer}"


def csrf_token(html: str) -> str:
    """The CSRF token a console page carries (a form's hidden field, or the page's meta tag)."""
    found = _CSRF_META.search(html) or _CSRF_FIELD.search(html)
    assert found is not None, "no CSRF token on the page"
    return found.group(1)


class ConsoleClient:
    """An HTTP client signed in to a gateway's console, as a browser would be (its cookies),
    with the page's CSRF token at hand for forms."""

    def __init__(self, gw: Gateway, key: str | None) -> None:
        self.gw = gw
        self.http = httpx2.Client(base_url=gw.url, timeout=60, verify=CLIENT_TLS)
        login = self.http.get("/console/login")
        assert login.status_code == 200, login.text
        answer = self.http.post(
            "/console/login",
            data={"key": key or "", "csrf_token": csrf_token(login.text), "next": "/console"},
        )
        assert answer.status_code == 303, answer.text
        self.csrf = csrf_token(self.get("/console").text)

    def get(self, path: str, **kwargs: Any) -> httpx2.Response:
        return self.http.get(path, **kwargs)

    def post(self, path: str, data: dict[str, Any] | None = None, **kwargs: Any) -> httpx2.Response:
        """A form post with the session's CSRF token."""
        return self.http.post(path, data={"csrf_token": self.csrf, **(data or {})}, **kwargs)

    def close(self) -> None:
        self.http.close()


# The `console` fixture's type: `console(gw, key)` signs in.
Console = Callable[..., ConsoleClient]


@pytest.fixture
def console(make_gateway: Callable[..., Gateway]) -> Iterator[Console]:
    """Sign in to a gateway's console: `console(gw, key)` (None: a gateway with no keys)."""
    made: list[ConsoleClient] = []

    def sign_in(gw: Gateway, key: str | None = CONSOLE_ADMIN_KEY) -> ConsoleClient:
        client = ConsoleClient(gw, key)
        made.append(client)
        return client

    yield sign_in
    for client in made:
        client.close()


def create_key(gw: Gateway, name: str, team: str | None = None, **fields: Any) -> str:
    """A client key made through the admin API (its team made first when missing): its secret."""
    with gw.http(CONSOLE_ADMIN_KEY) as admin:
        if team is not None and admin.get(f"/admin/v1/teams/{team}").status_code == 404:
            made_team = admin.post("/admin/v1/teams", json={"name": team})
            assert made_team.status_code == 200, made_team.text
        made = admin.post("/admin/v1/keys", json={"name": name, "team": team, **fields})
        assert made.status_code == 200, made.text
        secret: str = made.json()["key"]
        return secret


# --- The console in a real browser (tests/test_console_browser.py) ---------------------------
# Playwright's sync API drives Debian's `chromium` (MEDIAGATE_TEST_CHROMIUM names another
# binary); Playwright's own browser downloads are never used. One browser per pytest process
# (each xdist worker starts its own), one fresh context (cookies, viewport) per page a test
# opens. Without a Chromium the browser tests skip, visibly, except under CI (CI=true) and in
# `make screenshots`, where that is a failure (.ci/run installs the package).

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_binary() -> str | None:
    """The Chromium the browser tests launch, or None where there is none."""
    named = os.environ.get("MEDIAGATE_TEST_CHROMIUM")
    if named:
        return shutil.which(named)
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """A headless Chromium for the browser tests of one module (`--no-sandbox` when running as
    root). Module-scoped, not session-scoped: Playwright's sync API keeps an event loop running
    on the test thread while it is open, and a later test of another module that calls
    asyncio.run() (the stores' tests) would fail on it."""
    binary = chromium_binary()
    if binary is None:
        reason = "no Chromium to drive (apt-get install chromium, or MEDIAGATE_TEST_CHROMIUM)"
        if os.environ.get("CI") == "true" or os.environ.get("SCREENSHOTS_DIR"):
            pytest.fail(reason)  # `make screenshots` too: it would refresh nothing
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright  # ~0.2 s: not in every test's start

    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=binary, headless=True, args=args)
        try:
            yield browser
        finally:
            browser.close()


DESKTOP = (1280, 800)
PHONE = (390, 844)


@pytest.fixture
def browser_page(chromium: Browser) -> Iterator[Callable[..., Page]]:
    """`browser_page(width=1280, height=800)`: a page in a fresh context (its own cookies),
    closed at the test's end. A page's uncaught script errors fail the test."""
    contexts: list[BrowserContext] = []
    errors: list[str] = []

    def new_page(width: int = DESKTOP[0], height: int = DESKTOP[1]) -> Page:
        context = chromium.new_context(viewport={"width": width, "height": height})
        context.set_default_timeout(10_000)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))
        return page

    yield new_page
    for context in contexts:
        context.close()
    assert not errors, f"script errors in the console: {errors}"


def sign_in_page(page: Page, gw: Gateway, key: str | None = CONSOLE_ADMIN_KEY) -> Page:
    """Sign in on `page` through the real login form (the field labelled "Key", the "Sign in"
    button), as a person would; back on the overview afterwards."""
    page.goto(f"{gw.url}/console/login")
    if key is not None:
        page.get_by_label("Key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{gw.url}/console")
    return page


@pytest.fixture
def signed_in_page(browser_page: Callable[..., Page]) -> Callable[..., Page]:
    """`signed_in_page(gw, key=CONSOLE_ADMIN_KEY, width=1280, height=800)`: a new page signed
    in to the gateway's console through the login form."""

    def open_signed_in(
        gw: Gateway,
        key: str | None = CONSOLE_ADMIN_KEY,
        width: int = DESKTOP[0],
        height: int = DESKTOP[1],
    ) -> Page:
        return sign_in_page(browser_page(width, height), gw, key)

    return open_signed_in


def two_teams(gw: Gateway) -> str:
    """Keys `designer` and `shop-bot` of team marketing and `ml` of team research: the
    secret of `designer`, a member of marketing."""
    secret = create_key(gw, "designer", "marketing")
    create_key(gw, "shop-bot", "marketing")
    create_key(gw, "ml", "research")
    return secret
