"""``MemoryTransaction``: a user's open transaction on a ``MemoryStore``."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

from jobsync.backends.memory.records import ClaimKey
from jobsync.backends.memory.site import SiteState
from jobsync.backends.settle import Kind
from jobsync.core.errors import InvalidArgument

if TYPE_CHECKING:
    from jobsync.backends.memory.store import MemoryStore
    from jobsync.backends.settle import Settlement


class MemoryTransaction:
    """A user's open transaction on a ``MemoryStore`` (the ``connection`` of
    ``complete_in`` and ``release_in``).

    Completions and releases staged in it lock their claim rows and take
    effect at ``commit``; ``rollback`` drops them.  As a context manager it
    commits on success and rolls back on an exception.
    """

    def __init__(self, store: MemoryStore, client: str) -> None:
        self.store = store
        self.client = client
        self.open = True
        self._ops: list[
            tuple[SiteState, Kind, datetime.date, int, frozenset[str], float | None]
        ] = []
        self._locked: list[tuple[SiteState, ClaimKey]] = []

    def __repr__(self) -> str:
        return f"<MemoryTransaction of {self.client!r}{'' if self.open else ' ended'}>"

    def stage(self, state: SiteState, order: Settlement) -> frozenset[str]:
        """Lock and stage ``order`` (a completion or release of this incarnation's open
        claims among its keys).

        As in a database transaction, what this transaction already settled is
        no longer open to it: a release after a completion of the same task (or
        a second completion) finds nothing."""
        kind, day, inc = order.kind, order.day, order.incarnation
        settled = {(s, d, k) for s, _, d, _, ks, _ in self._ops for k in ks}
        mine = frozenset(
            k for k in state.claims.open_of(day, inc, order.keys) if (state, day, k) not in settled
        )
        blockers = state.claims.blockers([(day, k) for k in mine], self)
        if blockers:
            self.store._contend(self.client, kind, blockers)
        for key in mine:
            if state.claims.holder.get((day, key)) is not self:
                state.claims.holder[day, key] = self
                self._locked.append((state, (day, key)))
        self._ops.append((state, kind, day, inc, mine, order.cost))
        return mine

    def commit(self) -> None:
        with self.store._lock:
            self._end()
            for state, kind, day, inc, keys, cost in self._ops:
                state.claims.settle(kind, day, inc, keys, self.store.clock(), cost=cost)
            self._ops.clear()

    def rollback(self) -> None:
        with self.store._lock:
            self._end()
            self._ops.clear()

    def _end(self) -> None:
        if not self.open:
            raise InvalidArgument(f"{self!r} already ended")
        self.open = False
        for state, key in self._locked:
            if state.claims.holder.get(key) is self:
                del state.claims.holder[key]
        self._locked.clear()

    def __enter__(self) -> MemoryTransaction:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self.open:
            self.commit() if exc_type is None else self.rollback()
