"""Claiming, completing and releasing: the five verbs, written once for every backend.

``ClaimVerb.claim`` checks who claims (site, day, name, incarnation) into a
``ClaimOrder`` and hands it to the backend's ``_claim`` hook, which checks the
requests against the site's token count.

``complete`` and ``release`` settle an incarnation's open claims on jobsync's
own connection; ``complete_in`` and ``release_in`` (base.TransactionalCompletion)
do the same inside the caller's open transaction.  The four differ only in
what they do to a claim and where, so ``SettleVerbs`` checks the arguments
once into a ``Settlement`` (nothing is written when one is bad) and each
backend implements one hook, ``_settle(settlement, inside)``, where ``inside``
is the caller's connection or ``HERE``.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Literal

import attrs

from jobsync.backends import _checks as checks
from jobsync.backends.node_verbs import Entering
from jobsync.core.loadestimate import check_cost
from jobsync.core.model import ClaimRequest

Kind = Literal["complete", "release"]

HERE: object = object()
"""``inside`` of a settlement on jobsync's own connection (None is a caller's bad value)."""


@attrs.frozen
class ClaimOrder:
    """``claim``'s caller checked; ``requests`` as given (the backend checks them)."""

    site: str
    day: datetime.date
    name: str
    incarnation: int
    requests: Sequence[ClaimRequest]


class ClaimVerb(Entering):
    """``claim`` over one hook; a backend's claims class inherits it."""

    def claim(
        self, site: str, date: datetime.date, name: str, incarnation: int,
        requests: Sequence[ClaimRequest],
    ) -> frozenset[str]:  # fmt: skip
        self._entering("claim")
        order = ClaimOrder(
            checks.site_name(site),
            checks.claim_date(date),
            checks.node_name(name),
            checks.incarnation(incarnation),
            requests,
        )
        return self._claim(order)

    def _claim(self, order: ClaimOrder) -> frozenset[str]:
        """Claim ``order.requests`` (base.CoordinationBackend.claim)."""
        raise NotImplementedError


@attrs.frozen
class Settlement:
    """One completion's or release's arguments, checked: ``keys`` distinct, in order."""

    kind: Kind
    site: str
    day: datetime.date
    incarnation: int
    keys: tuple[str, ...]
    cost: float | None = None
    """A completion's explicit cost, stored with each claim it completes."""

    @classmethod
    def checked(
        cls, kind: Kind, site: object, date: object, incarnation: object, task_keys: object,
        *, cost: object = None,
    ) -> Settlement:  # fmt: skip
        """The arguments as a Settlement, or the InvalidArgument naming the bad one."""
        return cls(
            kind,
            checks.site_name(site),
            checks.claim_date(date),
            checks.incarnation(incarnation),
            tuple(dict.fromkeys(checks.task_keys(task_keys))),
            check_cost(cost),
        )


class SettleVerbs(Entering):
    """The four settling verbs over one hook; a backend's claims class inherits it."""

    def complete(
        self, site: str, date: datetime.date, incarnation: int, task_keys: Sequence[str],
        *, cost: float | None = None,
    ) -> frozenset[str]:  # fmt: skip
        return self._checked("complete", HERE, site, date, incarnation, task_keys, cost=cost)

    def release(
        self, site: str, date: datetime.date, incarnation: int, task_keys: Sequence[str]
    ) -> frozenset[str]:
        return self._checked("release", HERE, site, date, incarnation, task_keys)

    def complete_in(
        self, connection: object, site: str, date: datetime.date, incarnation: int,
        task_keys: Sequence[str], *, cost: float | None = None,
    ) -> frozenset[str]:  # fmt: skip
        """``complete`` inside ``connection``'s open transaction."""
        return self._checked("complete", connection, site, date, incarnation, task_keys, cost=cost)

    def release_in(
        self, connection: object, site: str, date: datetime.date, incarnation: int,
        task_keys: Sequence[str],
    ) -> frozenset[str]:  # fmt: skip
        """``release`` inside ``connection``'s open transaction."""
        return self._checked("release", connection, site, date, incarnation, task_keys)

    def _checked(
        self, kind: Kind, inside: object, *args: object, cost: object = None
    ) -> frozenset[str]:
        """Enter the verb ``kind``, check ``args`` (site, date, incarnation, task keys
        and a completion's cost) into a Settlement, settle it."""
        self._entering(kind)
        return self._settle(Settlement.checked(kind, *args, cost=cost), inside)

    def _settle(self, settlement: Settlement, inside: object = HERE) -> frozenset[str]:
        """Settle the open claims of ``settlement``: on jobsync's own connection when
        ``inside`` is HERE, else inside the caller's transaction on the connection
        ``inside`` (checked by the backend); return the keys settled."""
        raise NotImplementedError
