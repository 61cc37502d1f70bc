"""The room for upstream answers: how many bytes of them one replica holds at once, across all
requests (MEDIAGATE_MAX_INFLIGHT_UPSTREAM_BYTES), so that many honest large answers (4 x 30 MB
of base64 each) cannot together exhaust memory, whatever each is allowed alone
(MEDIAGATE_UPSTREAM_MAX_BYTES).

Counted on the one network path, as a whole answer is read (mediagate.upstream.transport's
`read_whole`, under both transports): an answer that declares its Content-Length takes all of
it before its first body byte is read, all or nothing; one without (chunked) takes each chunk
as it is read. What is taken belongs to a `Claim`: the request's (given back when the request
ends, since its answer is held until then: parsed, decoded, rendered, sent), or, outside a
request (the reconciler's polls), the one call's (given back when the call returns). An answer
that failed (an error status, a body cut short) gives its bytes back at once.

When the room is full, a read waits for room rather than dropping an answer the upstream may
have charged for: the body is not read, so the upstream's socket stalls (TCP flow control).
Waits are in order of arrival, except that a claim already holding bytes goes first (its room
may be what the others wait for). Three rules keep waiting from turning into a deadlock, where
every holder waits for room held by the others:

- all or nothing: an answer of known length holds nothing while it waits;
- never on oneself: an answer that could not fit even if every other request gave back all it
  holds (larger than the room, less what its own request holds already) is refused at once
  (`NeverFits`), never waited for; so is every answer larger than the whole room;
- a deadline: a wait lasts at most MEDIAGATE_UPSTREAM_ROOM_WAIT_S (`NoRoom` after it; 0: no
  wait at all). What is left (two requests each holding part of what the other needs, only
  possible with answers of unknown length or requests of several calls) ends there.

The gauges `mediagate_upstream_answer_bytes` and `mediagate_upstream_answers_waiting` show the
room; `mediagate_upstream_answer_room_total{outcome}` counts the answers that waited (`waited`),
waited in vain (`timed_out`) or could never fit (`too_large`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from mediagate.observability.metrics import Metrics


class NoRoom(Exception):
    """An answer waited longer than the room's deadline (`wait_s`) for room: not read."""

    def __init__(self, wait_s: float) -> None:
        super().__init__(wait_s)
        self.wait_s = wait_s


class NeverFits(Exception):
    """An answer that can never fit the room (with what its own request holds): not read."""

    def __init__(self, size: int, limit: int, own: int) -> None:
        super().__init__(size)
        self.limit, self.own = limit, own


@dataclass(slots=True, eq=False)
class _Waiter:
    claim: Claim
    size: int
    granted: asyncio.Future[None]


class AnswerRoom:
    """The room one replica has for upstream answers: `limit` bytes (0: no bound), a wait of
    at most `wait_s` for room."""

    def __init__(self, limit: int, wait_s: float, metrics: Metrics | None = None) -> None:
        self.limit = limit
        self.wait_s = wait_s
        self.held = 0
        self._metrics = metrics
        self._waiting: deque[_Waiter] = deque()

    def claim(self) -> Claim:
        return Claim(self)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def _show(self) -> None:
        if self._metrics is not None:
            self._metrics.upstream_answer_bytes.set(self.held)
            self._metrics.upstream_answers_waiting.set(len(self._waiting))

    def _count(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.child(self._metrics.upstream_answer_room, outcome).inc()

    def _grant(self, claim: Claim, size: int) -> None:
        self.held += size
        claim.held += size

    def _first(self, claim: Claim) -> bool:
        """Whether `claim` comes before every answer already waiting."""
        if not self._waiting:
            return True
        return claim.held > 0 and not any(w.claim.held > 0 for w in self._waiting)

    async def _take(self, claim: Claim, size: int) -> None:
        if size <= 0:
            return
        if not self.limit:
            self._grant(claim, size)
            self._show()
            return
        if claim.held + size > self.limit:
            self._count("too_large")
            raise NeverFits(size, self.limit, claim.held)
        if self.held + size <= self.limit and self._first(claim):
            self._grant(claim, size)
            self._show()
            return
        if self.wait_s <= 0:
            self._count("timed_out")
            raise NoRoom(self.wait_s)
        waiter = _Waiter(claim, size, asyncio.get_running_loop().create_future())
        self._waiting.append(waiter)
        self._show()
        try:
            async with asyncio.timeout(self.wait_s):
                await waiter.granted
        except BaseException as exc:
            if waiter.granted.done() and not waiter.granted.cancelled():
                # Granted just as the wait ended (a deadline, a client that left): given back.
                claim.give_back(size)
            else:
                self._waiting.remove(waiter)
                self._wake()  # the one ahead gave up: those behind may fit now
            self._show()
            if isinstance(exc, TimeoutError):
                self._count("timed_out")
                raise NoRoom(self.wait_s) from None
            raise
        self._count("waited")

    def _wake(self) -> None:
        """Room for the waiters that fit: holders first, then in order of arrival; the first
        that does not fit stops the rest (a large answer is not overtaken forever)."""
        order = sorted(self._waiting, key=lambda w: w.claim.held == 0)  # stable: arrival
        for waiter in order:
            if self.held + waiter.size > self.limit:
                break
            self._waiting.remove(waiter)
            self._grant(waiter.claim, waiter.size)
            waiter.granted.set_result(None)
        self._show()

    def _give_back(self, claim: Claim, size: int) -> None:
        size = min(size, claim.held)
        if size <= 0:
            return
        claim.held -= size
        self.held -= size
        if self._waiting:
            self._wake()
        else:
            self._show()


class Claim:
    """What one request (or one call outside a request) holds of the room."""

    __slots__ = ("closed", "held", "room")

    def __init__(self, room: AnswerRoom) -> None:
        self.room = room
        self.held = 0
        self.closed = False

    async def take(self, size: int) -> None:
        """`size` more bytes, waiting for room if need be (NoRoom, NeverFits)."""
        await self.room._take(self, size)

    def give_back(self, size: int) -> None:
        self.room._give_back(self, size)

    def release(self) -> None:
        """Everything held given back: the request's answers are no longer held. Taking after
        this is still counted (a call still reading); releasing again gives that back."""
        self.closed = True
        self.room._give_back(self, self.held)
