"""What a Job's claim ledger keeps to recover claims the database may have lost.

One duty: repairing two kinds of loss, so that no claim is left open by a
live incarnation that believes it finished (docs/PROTOCOL.md section 4,
"Claims and completion").

- A claim whose reply was lost may have committed: ``add_task`` answered
  False, so the claim is kept as *doubtful* and given back between ticks
  unless a retry took it (``release_doubtful``).
- A failover to an asynchronous replica may lose completions that had
  committed: the latest ones are remembered and, once the database is found
  to have lost history (``jobsync.core.continuity``), recorded again; those
  made inside the user's transactions were lost with the user's side effect,
  so their claims are given back instead (``resend_recent``).

``ClaimRecovery`` reads the ledger it serves through ``LedgerPlace``: where
claims are made (site, date, backend), which are open, and its counters.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Iterable
from typing import Protocol, TypeVar

from jobsync.backends.base import CoordinationBackend
from jobsync.core.errors import JobSyncError

log = logging.getLogger("jobsync.job")
_V = TypeVar("_V")

RECENT_LIMIT = 4096
"""Completions a Job remembers to send again after a failover lost them."""


def by_incarnation(pairs: Iterable[tuple[str, int]]) -> dict[int, list[str]]:
    """Task keys grouped by the incarnation that claimed them (a batch per group)."""
    groups: dict[int, list[str]] = {}
    for key, incarnation in pairs:
        groups.setdefault(incarnation, []).append(key)
    return groups


class LedgerPlace(Protocol):
    """What the recovery reads of its ledger (``runtime/ledger.py``'s ``ClaimLedger``)."""

    site: str
    name: str
    date: datetime.date
    backend: CoordinationBackend | None
    open: dict[str, int]

    def count(self, **deltas: int) -> None: ...


class ClaimRecovery:
    """The doubtful claims and the recent completions of one Job's ledger."""

    def __init__(self, ledger: LedgerPlace) -> None:
        self._ledger = ledger
        self.doubtful: dict[str, int] = {}
        """Claims whose reply was lost (the claim may have committed): the Job answered
        False, so each is given back (``release_doubtful``) unless a retry takes it."""
        self.claiming = threading.Lock()
        """Held by a claim and by the giving back of doubtful ones (never both at once)."""
        self.recent: dict[str, tuple[int, float | None]] = {}
        """The latest completions recorded (at most RECENT_LIMIT, oldest first), with
        the incarnation and cost of each, kept to be sent again should the database
        lose them (a failover to an asynchronous replica: ``resend_recent``)."""
        self.recent_tx: dict[str, int] = {}
        """The same for completions inside the user's transactions: should the
        database lose one, it lost the user's side effect with it, so the claim is
        given back for the task to be done again."""

    # -- what the ledger tells it ----------------------------------------------------
    def doubt(self, keys: Iterable[str], incarnation: int) -> None:
        """The claim of ``keys`` by ``incarnation`` may have committed unseen."""
        for key in keys:
            self.doubtful[key] = incarnation

    def taken(self, key: str) -> None:
        """A claim of ``key`` succeeded: it is an open claim, no longer doubtful."""
        self.doubtful.pop(key, None)

    def completed(self, key: str, incarnation: int, cost: float | None) -> None:
        """A completion was recorded (to be sent again should the database lose it)."""
        _remember(self.recent, key, (incarnation, cost))

    def completed_in_transaction(self, key: str, incarnation: int) -> None:
        """A completion was made inside the user's transaction."""
        _remember(self.recent_tx, key, incarnation)

    # -- recovering ------------------------------------------------------------------
    def release_doubtful(self) -> None:
        """Give back the claims whose reply was lost and that no retry took since: a
        claim that committed unseen would otherwise stay open, finished by nobody,
        while its incarnation lives.  Skipped while a claim is under way (the next
        tick tries again); on a transient error they stay doubtful."""
        ledger = self._ledger
        backend = ledger.backend
        if backend is None or not self.doubtful or not self.claiming.acquire(blocking=False):
            return
        try:
            pairs = [(k, inc) for k, inc in self.doubtful.items() if k not in ledger.open]
            for incarnation, keys in by_incarnation(pairs).items():
                released = backend.release(ledger.site, ledger.date, incarnation, keys)
                ledger.count(releases=len(released))
                for key in keys:
                    self.doubtful.pop(key, None)
        except JobSyncError as error:
            log.warning("node %s: could not give back doubtful claims (%s)", ledger.name, error)
        finally:
            self.claiming.release()

    def resend_recent(self) -> None:
        """Complete the recent completions again, after the database was found to have
        lost history (``jobsync.core.continuity``): a completion whose commit the new
        primary never received left its claim open, and nobody else would finish it.
        A completion the database kept settles nothing the second time."""
        backend = self._ledger.backend
        if backend is None:
            return
        self._give_back_lost_transactions(backend)
        self._complete_again(backend)

    def _give_back_lost_transactions(self, backend: CoordinationBackend) -> None:
        ledger = self._ledger
        # A key claimed again since is being worked on: neither given back nor completed.
        lost_tx = [(k, inc) for k, inc in self.recent_tx.items() if k not in ledger.open]
        for incarnation, keys in by_incarnation(lost_tx).items():
            try:  # a completion the database kept is done: releasing it does nothing
                released = backend.release(ledger.site, ledger.date, incarnation, keys)
            except JobSyncError as error:
                log.warning("node %s: giving back %d claims: %s", ledger.name, len(keys), error)
                continue
            if released:
                log.warning(
                    "node %s: %d completions made in your transactions were lost by the "
                    "database with them; their claims are given back to be done again",
                    ledger.name,
                    len(released),
                )
            ledger.count(releases=len(released))

    def _complete_again(self, backend: CoordinationBackend) -> None:
        ledger = self._ledger
        groups: dict[tuple[int, float | None], list[str]] = {}
        for key, (incarnation, cost) in self.recent.items():
            if key in ledger.open:
                continue
            groups.setdefault((incarnation, cost), []).append(key)
        resent = 0
        for (incarnation, cost), keys in groups.items():
            try:
                done = backend.complete(ledger.site, ledger.date, incarnation, keys, cost=cost)
            except JobSyncError as error:  # the claims' holder is gone: nothing to finish
                log.warning("node %s: re-sending %d completions: %s", ledger.name, len(keys), error)
                continue
            resent += len(done)
        if resent:
            log.warning(
                "node %s: %d completions the database had lost were recorded again",
                ledger.name,
                resent,
            )
        ledger.count(completions_resent=resent)


def _remember(recent: dict[str, _V], key: str, value: _V) -> None:
    """Put ``key`` last in ``recent``, dropping the oldest past RECENT_LIMIT."""
    recent.pop(key, None)
    recent[key] = value
    if len(recent) > RECENT_LIMIT:
        del recent[next(iter(recent))]
