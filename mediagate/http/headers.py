"""Every header the gateway writes about what it did, rendered here from typed facts and nowhere
else.

The use cases and the sender record facts on the request's record (`mediagate.context`): the
route that served, the alias asked for, the parameters dropped or mapped, the upstream calls
made and how many failed, the retries and fallbacks, the cost, whether the answer is an
Idempotency-Key's replay. The bookkeeping middleware (`mediagate.http.middleware`) renders them
into the answer's headers with `render`, once, as the answer starts; an error's own headers come
from `for_error`. docs/api.md lists them:

- `x-request-id`: the request's id, always the gateway's own (the records are keyed by it);
- `x-client-request-id`: the client's own id for the request, echoed when it sent a sane one;
- `x-mediagate-cost-usd`: what the request charged (not on streams: known only at their end);
- `x-mediagate-route`: the route that served (once the model was resolved);
- `x-mediagate-dropped`, `x-mediagate-mapped`: what the route's normalisation did;
- `x-mediagate-upstream-calls`, `x-mediagate-partial`: an `n` split over several calls;
- `x-mediagate-alias`, `Deprecation` (RFC 9745), `Link`: a retired name's successor served;
- `x-mediagate-retries`, `x-mediagate-fallback`, and `x-should-retry: false`: the gateway
  retried or fell back already (the SDKs must not multiply that), or the error is final;
- `x-mediagate-idempotent-replay: true`: the first answer to an Idempotency-Key, replayed.

A value goes out only if it is safe in a header (printable ASCII): a fact is never written
as a broken header, whatever text reached it.
"""

from __future__ import annotations

import calendar
import re
from typing import TYPE_CHECKING

from mediagate.errors import GatewayError

if TYPE_CHECKING:
    from mediagate.catalog import Alias
    from mediagate.context import RequestContext

REQUEST_ID = "x-request-id"
COST = "x-mediagate-cost-usd"
ROUTE = "x-mediagate-route"
DROPPED = "x-mediagate-dropped"
MAPPED = "x-mediagate-mapped"
CALLS = "x-mediagate-upstream-calls"
PARTIAL = "x-mediagate-partial"
ALIAS = "x-mediagate-alias"
DEPRECATION = "deprecation"
LINK = "link"
RETRIES = "x-mediagate-retries"
FALLBACK = "x-mediagate-fallback"
REPLAYED = "x-mediagate-idempotent-replay"
SHOULD_RETRY = "x-should-retry"
# Read, not written: a client's word that a video reference of another size may be fitted.
FIT_REFERENCE = "x-mediagate-fit-reference"
# Read, not written: the key a console user acts with (mediagate.http.deps.acting_key).
ACT_AS = "x-mediagate-key"

_SAFE = re.compile(r"[\x20-\x7e]{1,4096}")


def _deprecation(alias: Alias) -> str:
    return f"@{calendar.timegm(alias.retired_on.timetuple())}"


def facts(ctx: RequestContext) -> dict[str, str]:
    """What the request's record says the gateway did, as headers (without the request id and
    the cost: an Idempotency-Key keeps these with the answer it replays)."""
    headers: dict[str, str] = {}
    if ctx.route is not None:
        headers[ROUTE] = ctx.route.id
    if ctx.dropped:
        headers[DROPPED] = ",".join(sorted(ctx.dropped))
    if ctx.mapped:
        headers[MAPPED] = ",".join(ctx.mapped)
    if ctx.upstream_calls > 1:
        headers[CALLS] = str(ctx.upstream_calls)
    if ctx.partial is not None:
        done, calls = ctx.partial
        headers[PARTIAL] = f"{done}/{calls}"
    alias = ctx.alias
    if alias is not None:
        headers[ALIAS] = f"{alias.name}>{ctx.model or alias.to}"
        headers[DEPRECATION] = _deprecation(alias)
        if alias.link:
            headers[LINK] = f'<{alias.link}>; rel="deprecation"; type="text/html"'
    if ctx.retries or ctx.fallbacks:
        # The gateway already retried: the SDK must not multiply that by its own retries.
        headers[SHOULD_RETRY] = "false"
        if ctx.retries:
            headers[RETRIES] = str(ctx.retries)
        if ctx.fallbacks:
            headers[FALLBACK] = ",".join(ctx.fallbacks)
    if ctx.replayed:
        headers[REPLAYED] = "true"
    return {name: value for name, value in headers.items() if _SAFE.fullmatch(value)}


def for_error(exc: GatewayError) -> dict[str, str]:
    """An error's own headers (Retry-After, Allow, ...), and `x-should-retry: false` when no
    retry can change it (`GatewayError.final`)."""
    headers = dict(exc.headers)
    if exc.final:
        headers[SHOULD_RETRY] = "false"
    return headers


def render(
    ctx: RequestContext, path: str, headers: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """The answer's headers as the handler made them, plus the request id, what it cost and
    the record's facts (which win over a header of the same name the handler set, such as
    the facts kept with a replayed answer)."""
    if not any(name.lower() == b"x-request-id" for name, _ in headers):
        headers.append((b"x-request-id", ctx.request_id.encode()))
    if ctx.client_request_id is not None:
        headers.append((b"x-client-request-id", ctx.client_request_id.encode()))
    if path.startswith("/v1/") and not ctx.streaming:
        # What this request charged; a stream's cost is known only at its end.
        headers.append((COST.encode(), f"{ctx.cost or 0.0:.6f}".encode()))
    told = facts(ctx)
    if told:
        names = {name.encode() for name in told}
        headers = [(k, v) for k, v in headers if k.lower() not in names]
        headers += [(k.encode(), v.encode()) for k, v in told.items()]
    return headers
