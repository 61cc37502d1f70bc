"""What the gateway tried on a request's behalf, told to the client in the response headers.

The upstream code notes each retry and each route a request left for a fallback in the
request's `Attempts` (a context variable, so calls made in child tasks for n > 1 add to the
same record). When there were any, the answer carries `x-mediagate-retries: N` and
`x-mediagate-fallback: route=reason,...`, and `x-should-retry: false`: the gateway already
retried, so the SDK must not multiply that by its own retries.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send


@dataclass
class Attempts:
    retries: int = 0
    fallbacks: list[str] = field(default_factory=list)  # "route=reason", in order

    def headers(self) -> dict[str, str]:
        if not self.retries and not self.fallbacks:
            return {}
        headers = {"x-should-retry": "false"}
        if self.retries:
            headers["x-mediagate-retries"] = str(self.retries)
        if self.fallbacks:
            headers["x-mediagate-fallback"] = ",".join(self.fallbacks)
        return headers


_CURRENT: ContextVar[Attempts | None] = ContextVar("mediagate_attempts", default=None)


def current() -> Attempts | None:
    return _CURRENT.get()


def note_retry() -> None:
    attempts = _CURRENT.get()
    if attempts is not None:
        attempts.retries += 1


def note_fallback(route_id: str, reason: str) -> None:
    attempts = _CURRENT.get()
    if attempts is not None:
        attempts.fallbacks.append(f"{route_id}={reason}")


class AttemptHeaders:
    """ASGI middleware: a fresh `Attempts` per request, reported on the way out."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        attempts = Attempts()
        token = _CURRENT.set(attempts)

        async def reporting(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = attempts.headers()
                if extra:
                    names = {name.encode() for name in extra}
                    headers = [
                        (k, v) for k, v in message.get("headers", []) if k.lower() not in names
                    ]
                    headers += [(k.encode(), v.encode()) for k, v in extra.items()]
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, reporting)
        finally:
            _CURRENT.reset(token)
