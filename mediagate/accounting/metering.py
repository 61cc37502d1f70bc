"""A client key's policy applied to one request: scope, rates, concurrency, budget, then cost.

Admission comes in two steps, so a client over its limits never gets the gateway to read its
body: `gate` runs before the body is read (the key's request rate, its concurrency slot, and
whether any budget is left: what needs nothing from the body), and `admit` finishes once the
body is parsed (the model's scope, the images rate, the reservation of the request's estimate),
taking over the gate's slot. `admit` without a gate does both.

`admit` runs before anything goes upstream and refuses with the OpenAI error a client expects
(403 for a model the key may not use, 429 `rate_limit_exceeded` or `insufficient_quota`).
`Ticket.settle` books what the request actually cost, once, and frees what it held.

Budgets are the key's own and its team's (`KeyRegistry.team`, shared by the team's keys): a
reservation holds the request's estimate against both in one step (the ledger's one
transaction), and a refusal says whose budget is short. A request is settled under its request
id (a video under its job id), the id its request log row carries.

Only the checks a key has cost a store round trip: a key without rate limits takes no bucket,
one without a concurrency limit holds no slot, and one without a budget (its own or its team's)
reserves nothing (a budget added to a key by a keys-file reload therefore does not see that
key's requests already running until they settle). Every request's cost and usage are booked
all the same.

A request that held nothing in the store (no slot, no reservation: a key without a budget or
a concurrency limit) is not made to wait for its booking either: its charge joins a batch that
a writer task books every `flush_interval_s`, all in one store transaction (with SQLite's
synchronous=FULL, one fsync per batch instead of one per request, which was most of the
gateway's own time per pass-through request). Nothing is lost on a clean stop: `drain` books
what is queued before the stores close, and every read of the booked figures (GET /v1/usage,
GET /metrics) books the queue first, so it never shows less than what was answered.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from mediagate import context
from mediagate.accounting.clients import KeyPolicy, TeamPolicy
from mediagate.context import RequestContext
from mediagate.errors import QuotaExceeded, RateLimited
from mediagate.observability.metrics import Metrics
from mediagate.stores.ledger import Budgets, Charge, Ledger, OwnerKind, Spend

log = logging.getLogger("mediagate")

# A slot or a reservation outlives its request only if the replica holding it died; then it
# is freed after this long (longer than any request may take).
LEASE_TTL_S = 900.0
VIDEO_RESERVATION_TTL_S = 86_400.0  # a video job's reservation waits for the job to finish
_BOOK_ATTEMPTS = 3  # a settle whose ledger write fails is tried this often before it gives up


@dataclass
class Ticket:
    """What one admitted request holds: its reservation id, and a concurrency slot if any.

    The first charge a request decides on is the one booked (a stream that delivered images
    and is then torn down settles what it delivered, not the 0 of its clean-up). Booking runs
    in a task of its own, shielded from the request: a client that hangs up cancels the
    request, never its bill. `settled` turns true only once the ledger has the charge; a
    booking that failed is tried again by the next settle (and a few times on its own).
    """

    metering: Metering
    policy: KeyPolicy
    model: str
    reservation: str
    # Concurrency slots held: (the key's or its team's bucket, the slot's id); () for none.
    lease: Slots = ()
    # The request's record: the route that served it is what its charge's rollups count under.
    request: RequestContext | None = field(default=None, repr=False)
    settled: bool = field(default=False)
    charge: Charge | None = field(default=None)
    # Held nothing in the store: booked in the metering's next batch, off the request path.
    batched: bool = field(default=False)
    _queued: bool = field(default=False, repr=False)
    _booking: asyncio.Task[None] | None = field(default=None, repr=False)

    async def settle(self, charge: Charge) -> None:
        """Book the actual charge (0 for a failure) and release the concurrency slot; a
        cancelled caller stops waiting, but the booking goes on."""
        task = self.settle_soon(charge)
        if task is not None:
            await asyncio.shield(task)

    def settle_soon(self, charge: Charge) -> asyncio.Task[None] | None:
        """Start booking `charge` (unless one was decided before) in a task of its own: the
        request may be being cancelled (its client went away), and a cancelled request must
        still be billed and free its slot and reservation."""
        if self.charge is None:
            self.charge = self._complete(charge)
        if self.settled:
            return None
        if self.batched:
            if not self._queued:
                self._queued = True
                self.metering.enqueue(self)
            return None
        if self._booking is None or self._booking.done():
            task = asyncio.create_task(self._book())
            pending = self.metering.pending
            pending.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(pending.discard)
            self._booking = task
        return self._booking

    def _complete(self, charge: Charge) -> Charge:
        """The charge with the key's team, and the route that served (when the caller did
        not name one): what its settlement's rollups are keyed by."""
        route = self.request.route if self.request is not None else None
        return dataclasses.replace(
            charge,
            team=charge.team or self.policy.team or "",
            route=charge.route or (route.id if route is not None else ""),
        )

    async def _book(self) -> None:
        charge = self.charge
        assert charge is not None
        metering = self.metering
        try:
            for attempt in range(_BOOK_ATTEMPTS):
                try:
                    booked = await metering.ledger.settle(
                        self.policy.name, self.reservation, charge
                    )
                    break
                except Exception:
                    if attempt == _BOOK_ATTEMPTS - 1:
                        log.exception(
                            "booking a request's charge failed",
                            extra={"fields": {"reservation": self.reservation}},
                        )
                        metering.metrics.settle_failures.inc()
                        return  # the reservation, if any, is booked when it expires
                    await asyncio.sleep(0.2 * 2**attempt)
            self.settled = True
            if booked and charge.cost:
                metering.metrics.cost.labels(self.policy.name, charge.model).inc(charge.cost)
            try:
                await metering.update_budget_gauge(self.policy)
            except Exception:
                log.warning("updating the budget gauge failed", exc_info=True)
        finally:
            await self.release()

    async def release(self) -> None:
        """Free the concurrency slots (a video job's reservation stays until the job ends)."""
        slots, self.lease = self.lease, ()
        await self.metering.free(slots)


@dataclass
class Gate:
    """What a request holds before its body is read: its key's concurrency slot, if the key has
    a limit. `admit` takes the slot over into the request's Ticket; `release` frees it for a
    request that never got that far (a bad body, an Idempotency-Key replay)."""

    metering: Metering
    policy: KeyPolicy
    lease: Slots = ()

    def take_lease(self) -> Slots:
        lease, self.lease = self.lease, ()
        return lease

    async def release(self) -> None:
        await self.metering.free(self.take_lease())


# A concurrency slot held: (the bucket it is counted in, the slot's id).
Slots = tuple[tuple[str, str], ...]


def _team_bucket(team: TeamPolicy) -> str:
    """A team's own windows and slots: `team:` cannot begin a key's name (no colon in one)."""
    return f"team:{team.name}"


def _rate_limited(whose: str, wait: float) -> RateLimited:
    return RateLimited(
        f"Rate limit reached for {whose}: try again in {wait:.1f} s.",
        headers={"retry-after": str(math.ceil(wait)), "retry-after-ms": str(int(wait * 1000))},
    )


def _no_slot(whose: str, limit: int) -> RateLimited:
    return RateLimited(
        f"{whose[0].upper()}{whose[1:]} already has {limit} requests running; wait for one to "
        "finish.",
        code="concurrency_limit_exceeded",
        headers={"retry-after": "1"},
    )


def _whose(kind: OwnerKind, policy: KeyPolicy) -> str:
    """Whose budget is short, in a refusal's words: the key's own, or its team's."""
    if kind == "key":
        return f"the key '{policy.name}'"
    return f"the team '{policy.team}' (shared by its keys)"


def _over_budget(kind: OwnerKind, policy: KeyPolicy) -> QuotaExceeded:
    return QuotaExceeded(
        f"The budget of {_whose(kind, policy)} is spent (or held by requests still running). "
        "See GET /v1/usage for what is spent and left."
    )


class Metering:
    def __init__(
        self,
        ledger: Ledger,
        metrics: Metrics,
        flush_interval_s: float = 0.25,
        teams: Callable[[str | None], TeamPolicy | None] = lambda _: None,
        key_team: Callable[[str], str | None] = lambda _: None,
    ) -> None:
        self.ledger = ledger
        self.metrics = metrics
        # A team's budgets by its name (KeyRegistry.team), and a key's team by the key's name
        # (for a video settled after its request: mediagate.videos.service).
        self.teams = teams
        self.key_team = key_team
        self.pending: set[asyncio.Task[None]] = set()
        self.flush_interval_s = flush_interval_s
        self._queue: list[Ticket] = []
        self._writer: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._flushing: asyncio.Lock | None = None
        self._closed = False

    async def drain(self) -> None:
        """Wait for settlements still running (a batch being written included), then book
        what is still queued (at shutdown, before the ledger closes)."""
        self._closed = True
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        if self.pending:
            await asyncio.gather(*self.pending, return_exceptions=True)
        await self.flush()

    def enqueue(self, ticket: Ticket) -> None:
        """Queue a ticket that held nothing for the next batch (Ticket.settle_soon)."""
        self._queue.append(ticket)
        if self._wake is None:
            self._wake = asyncio.Event()
        self._wake.set()
        if not self._closed and (self._writer is None or self._writer.done()):
            self._writer = asyncio.create_task(self._write_forever(self._wake))

    async def _write_forever(self, wake: asyncio.Event) -> None:
        while True:
            await wake.wait()
            wake.clear()
            # Let the batch fill: one transaction for every request of the interval.
            await asyncio.sleep(self.flush_interval_s)
            try:
                await self.flush()
            except Exception:  # flush logs and counts its own failures; never stop writing
                log.exception("booking a batch of charges failed")

    async def flush(self) -> None:
        """Book every queued charge now, in one ledger call (tried a few times); returns once
        what was queued before the call is booked (or given up on, logged and counted)."""
        if self._flushing is None:
            self._flushing = asyncio.Lock()
        async with self._flushing:  # an earlier batch still being written is booked first
            tickets, self._queue = self._queue, []
            if not tickets:
                return
            # Shielded, and in `pending` (which `drain` waits for): a usage read whose client
            # goes away, or the writer cancelled at shutdown, must not drop a batch.
            task = asyncio.ensure_future(self._book_batch(tickets))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)
            await asyncio.shield(task)

    async def _book_batch(self, tickets: list[Ticket]) -> None:
        charges: list[tuple[str, str, Charge]] = []
        for ticket in tickets:
            assert ticket.charge is not None  # settle_soon decides it before queueing
            charges.append((ticket.policy.name, ticket.reservation, ticket.charge))
        for attempt in range(_BOOK_ATTEMPTS):
            try:
                booked = await self.ledger.settle_many(charges)
                break
            except Exception:
                if attempt == _BOOK_ATTEMPTS - 1:
                    log.exception(
                        "booking a batch of charges failed",
                        extra={"fields": {"charges": len(charges)}},
                    )
                    self.metrics.settle_failures.inc(len(charges))
                    return
                await asyncio.sleep(0.2 * 2**attempt)
        for ticket, (key, _, charge), was_booked in zip(tickets, charges, booked, strict=True):
            ticket.settled = True
            if was_booked and charge.cost:
                self.metrics.cost.labels(key, charge.model).inc(charge.cost)

    async def update_budget_gauge(self, policy: KeyPolicy, spend: Spend | None = None) -> None:
        limits = {"day": policy.budget_usd_per_day, "month": policy.budget_usd_per_month}
        if all(limit is None for limit in limits.values()):
            return
        spend = spend or await self.ledger.spend(policy.name)
        spent = {"day": spend.day, "month": spend.month}
        for period, limit in limits.items():
            if limit is not None:
                remaining = max(0.0, limit - spent[period] - spend.reserved)
                self.metrics.budget_remaining.labels(policy.name, period).set(remaining)

    async def admit_read(self, policy: KeyPolicy, default_rpm: int) -> None:
        """Take one read (a video list, retrieve or download) from the key's read budget: its
        `reads_per_minute`, else `default_rpm` (0: unlimited). Over it, a 429 with
        Retry-After. Reads have their own bucket, so polling never eats the budget of new
        work, nor new work that of polling."""
        team = self.teams(policy.team)
        limits: list[tuple[str, int, OwnerKind]] = [
            (f"{policy.name}:reads", policy.reads_per_minute or default_rpm, "key")
        ]
        if team is not None and team.reads_per_minute:
            limits.append((f"{_team_bucket(team)}:reads", team.reads_per_minute, "team"))
        for bucket, rpm, kind in limits:
            if rpm:
                await self._take_read(bucket, rpm, _whose(kind, policy))

    async def _take_read(self, bucket: str, rpm: int, whose: str) -> None:
        wait = await self.ledger.take_rate(bucket, rpm, None, 0)
        if wait > 0:
            raise RateLimited(
                f"Read rate limit reached for {whose} ({rpm} per minute): "
                f"try again in {wait:.1f} s.",
                code="read_rate_limit_exceeded",
                headers={
                    "retry-after": str(math.ceil(wait)),
                    "retry-after-ms": str(int(wait * 1000)),
                },
            )

    async def _take_rates(self, policy: KeyPolicy, *, requests: bool, images: int) -> None:
        """One request (when `requests`) and `images` images from the key's per-minute
        windows, then from its team's (a refusal by the team's leaves the key's taken: the two
        are separate windows in the coordination store). Each ledger call is a store round
        trip (a SQLite transaction on a worker thread, or a Redis script): a limit that is not
        set is skipped."""
        team = self.teams(policy.team)
        windows: list[tuple[str, int | None, int | None, OwnerKind]] = [
            (policy.name, policy.requests_per_minute, policy.images_per_minute, "key")
        ]
        if team is not None:
            windows.append(
                (_team_bucket(team), team.requests_per_minute, team.images_per_minute, "team")
            )
        for bucket, rpm, ipm, kind in windows:
            rpm = rpm if requests else None
            ipm = ipm if images else None
            if rpm is None and ipm is None:
                continue
            wait = await self.ledger.take_rate(bucket, rpm, ipm, images)
            if wait > 0:
                raise _rate_limited(_whose(kind, policy), wait)

    async def _take_slots(self, policy: KeyPolicy) -> Slots:
        """A concurrency slot of the key's and one of its team's, where they have a limit:
        both or neither."""
        team = self.teams(policy.team)
        limits: list[tuple[str, int | None, OwnerKind]] = [
            (policy.name, policy.concurrent_requests, "key")
        ]
        if team is not None:
            limits.append((_team_bucket(team), team.concurrent_requests, "team"))
        held: list[tuple[str, str]] = []
        for bucket, limit, kind in limits:
            if limit is None:
                continue
            lease = uuid.uuid4().hex
            if not await self.ledger.acquire(bucket, lease, limit, LEASE_TTL_S):
                await self.free(tuple(held))
                raise _no_slot(_whose(kind, policy), limit)
            held.append((bucket, lease))
        return tuple(held)

    async def free(self, slots: Slots) -> None:
        for bucket, lease in slots:
            await self.ledger.release(bucket, lease)

    async def gate(self, policy: KeyPolicy) -> Gate:
        """What a request must pass before its body is read: the key's request rate, a
        concurrency slot (held by the returned Gate), and some budget left (the request's own
        estimate is reserved by `admit`, once the body says what it asks)."""
        await self._take_rates(policy, requests=True, images=0)
        gate = Gate(self, policy, await self._take_slots(policy))
        try:
            await self._budget_left(policy)
        except BaseException:
            await gate.release()
            raise
        return gate

    def budgets(self, policy: KeyPolicy) -> Budgets:
        """The limits a request of the key must fit: its own, and its team's."""
        team = self.teams(policy.team)
        return Budgets(
            policy.budget_usd_per_day,
            policy.budget_usd_per_month,
            team.budget_usd_per_day if team is not None else None,
            team.budget_usd_per_month if team is not None else None,
        )

    async def _budget_left(self, policy: KeyPolicy) -> None:
        budgets = self.budgets(policy)
        if not budgets.any():
            return
        for kind, limit, used in await self._spent(policy, budgets):
            if used >= limit:
                raise _over_budget(kind, policy)

    async def _spent(
        self, policy: KeyPolicy, budgets: Budgets
    ) -> list[tuple[OwnerKind, float, float]]:
        """Each budget that applies to the key (its own day and month, its team's), with what
        is spent and reserved against it now."""
        if self._queue:
            await self.flush()  # the budget sees every request answered before this one
        owners: list[tuple[OwnerKind, str, float | None, float | None]] = [
            ("key", policy.name, budgets.day, budgets.month),
            ("team", policy.team or "", budgets.team_day, budgets.team_month),
        ]
        spent: list[tuple[OwnerKind, float, float]] = []
        for kind, owner, day, month in owners:
            if not owner or (day is None and month is None):
                continue
            spend = await self.ledger.spend(owner, kind)
            spent += [
                (kind, limit, used + spend.reserved)
                for limit, used in ((day, spend.day), (month, spend.month))
                if limit is not None
            ]
        return spent

    async def budget_left(self, policy: KeyPolicy) -> tuple[float, str] | None:
        """The least budget the key has left now (its own day and month, its team's), with whose
        it is: what a batch's estimate must fit at create. None: no budget applies."""
        budgets = self.budgets(policy)
        if not budgets.any():
            return None
        left = [
            (max(0.0, limit - used), kind)
            for kind, limit, used in await self._spent(policy, budgets)
        ]
        if not left:
            return None
        amount, kind = min(left, key=lambda item: item[0])
        return amount, _whose(kind, policy)

    async def admit(
        self,
        policy: KeyPolicy,
        model: str,
        *,
        images: int,
        estimate: float,
        reservation: str | None = None,
        reservation_ttl_s: float = LEASE_TTL_S,
        gate: Gate | None = None,
    ) -> Ticket:
        """The request admitted: after its `gate` (taking over its slot), or, without one,
        the gate's checks first."""
        policy.require(model)
        team = self.teams(policy.team)
        per_minute: list[tuple[OwnerKind, int | None]] = [
            ("key", policy.images_per_minute),
            ("team", team.images_per_minute if team is not None else None),
        ]
        for kind, ipm in per_minute:
            if ipm is not None and images > ipm:
                raise RateLimited(
                    f"This request asks for {images} images; "
                    f"{_whose(kind, policy)} may make at most {ipm} per minute.",
                    param="n",
                    retryable=False,  # waiting does not make an over-large request fit
                )
        # Behind a gate, the request rate was taken already.
        await self._take_rates(policy, requests=gate is None, images=images)
        # Settled under the request's id (a video's job id): the id its request log row and
        # its settlement share.
        request = context.current()
        ticket = Ticket(self, policy, model, reservation or request.request_id, request=request)
        ticket.lease = gate.take_lease() if gate is not None else await self._take_slots(policy)
        budgets = self.budgets(policy)
        if not budgets.any():
            # Nothing to hold a reservation against: it would only be deleted again at settle.
            # The settle still books the request's cost and usage (by the ticket's id, once),
            # in a batch when the request holds nothing else (no slot, no job's id).
            ticket.batched = not ticket.lease and reservation is None
            return ticket
        if self._queue:
            await self.flush()  # the budget sees every request answered before this one
        short = await self.ledger.reserve(
            policy.name,
            ticket.reservation,
            estimate,
            budgets,
            reservation_ttl_s,
            team=policy.team or "",
        )
        if short is not None:
            await ticket.release()
            raise QuotaExceeded(
                f"This request could cost up to ${estimate:.4f}, which would pass the budget of "
                f"{_whose(short, policy)}. See GET /v1/usage for what is spent and left."
            )
        return ticket
