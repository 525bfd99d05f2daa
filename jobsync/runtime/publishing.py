"""What a node publishes to its Job: the claim snapshot and the rebalance events.

``can_claim_task`` reads ``Publisher.snapshot`` (one immutable object, swapped
whole) without a lock; every change of the claimable set is also queued as a
``RebalanceEvent`` for ``on_rebalance``.  The node decides what to publish
(``runtime/node.py``); this class builds the snapshot, keeps the local lease
deadline in it, fences (an empty snapshot) and counts versions.  It tells the
node's agenda when the local lease of a non-empty snapshot ends, so the node
wakes to fence then (docs/PROTOCOL.md section 4, "Clocks").
"""

from __future__ import annotations

import math

import attrs

from jobsync.runtime.agenda import Agenda
from jobsync.runtime.legacy import deprecated
from jobsync.runtime.snapshot import ClaimSnapshot, diff

LEASE_END = "lease-end"
"""The agenda timer of the local lease's end while tokens are held."""


@attrs.frozen(kw_only=True)
class RebalanceEvent:
    """A change of this node's claimable set (self-fencing included)."""

    added: frozenset[int]
    removed: frozenset[int]
    tokens: frozenset[int]
    version: int
    first: bool

    # The original jobsync's fields, as deprecated aliases (runtime/legacy.py).
    @property
    def is_initial(self) -> bool:
        deprecated("RebalanceEvent.is_initial", "use event.first")
        return self.first

    @property
    def token_version(self) -> int:
        deprecated("RebalanceEvent.token_version", "use event.version")
        return self.version

    @property
    def tokens_added(self) -> int:
        deprecated("RebalanceEvent.tokens_added", "use len(event.added)")
        return len(self.added)

    @property
    def tokens_removed(self) -> int:
        deprecated("RebalanceEvent.tokens_removed", "use len(event.removed)")
        return len(self.removed)


class Publisher:
    """The published snapshot of one node, its version and its pending events."""

    def __init__(self, total_tokens: int, agenda: Agenda, *, self_fencing: bool = True) -> None:
        self.total_tokens = total_tokens
        self.snapshot = ClaimSnapshot.empty(total_tokens)
        self.events: list[RebalanceEvent] = []
        self.version = 0
        self.lease_deadline = -math.inf
        self._agenda = agenda
        self._self_fencing = self_fencing

    def renew(self, deadline: float) -> None:
        """A new local lease deadline; the current snapshot carries it at once."""
        self.lease_deadline = deadline
        if self.snapshot.incarnation is not None:
            self.publish(self._with_lease(self.snapshot), quiet=True)

    def tokens(self, incarnation: int, epochs: dict[int, int]) -> None:
        """Publish the claimable tokens (token -> epoch) of ``incarnation``."""
        current = self.snapshot
        if current.incarnation == incarnation and current.epochs == epochs:
            renewed = self._with_lease(current)
            if current.lease_deadline != renewed.lease_deadline:
                self.publish(renewed, quiet=True)
            return
        snap = ClaimSnapshot.build(
            self.total_tokens,
            epochs,
            self.lease_deadline,
            incarnation,
            self.version + 1,
            self_fencing=self._self_fencing,
        )
        self.publish(snap)

    def fence(self) -> None:
        """Claim nothing (an empty snapshot), if anything was claimable."""
        if self.snapshot.tokens or self.snapshot.incarnation is not None:
            self.publish(ClaimSnapshot.empty(self.total_tokens, self.version + 1))

    def lapsed(self, now: float) -> bool:
        """Fence if the local lease of a non-empty snapshot ran out; True if it did."""
        if self.snapshot.tokens and now >= self.snapshot.lease_deadline:
            self.fence()
            return True
        return False

    def _with_lease(self, snap: ClaimSnapshot) -> ClaimSnapshot:
        return snap.with_lease(self.lease_deadline, self_fencing=self._self_fencing)

    def publish(self, snap: ClaimSnapshot, quiet: bool = False) -> None:
        old = self.snapshot
        self.snapshot = snap
        if snap.tokens:
            self._agenda.at(LEASE_END, snap.lease_deadline, reason="the local lease ends")
        else:
            self._agenda.cancel(LEASE_END)
        if quiet or snap.tokens == old.tokens:
            return
        self.version += 1
        added, removed = diff(old.tokens, snap.tokens)
        self.events.append(
            RebalanceEvent(
                added=added,
                removed=removed,
                tokens=snap.tokens,
                version=self.version,
                first=self.version == 1,
            )
        )

    def take_events(self) -> list[RebalanceEvent]:
        events, self.events = self.events, []
        return events
