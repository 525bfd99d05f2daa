"""Registering and draining a node: the verbs' checks and signatures, written once.

``RegisterVerb.register`` checks its arguments into a ``Joining`` (nothing is
written when one is bad) and hands it to the backend's ``_register`` hook; the
new row itself is ``rules.takeover``'s (PostgreSQL's UPSERT_NODE is its SQL form).
``DrainVerb.set_drain`` does the same with a ``DrainOrder`` and ``_set_drain``;
the drained row is ``rules.drain``'s or ``rules.undrain``'s.
"""

from __future__ import annotations

import attrs

from jobsync.backends import _checks as checks
from jobsync.core.model import Joining, NodeRecord, Registration


def checked(
    site: object, name: object, lease_timeout: object, *, process: object, known: object,
    capacity: object,
) -> Joining:  # fmt: skip
    """``register``'s arguments as a Joining, or the InvalidArgument naming the bad one."""
    return Joining(
        site=checks.site_name(site),
        name=checks.node_name(name),
        lease_timeout=checks.seconds("lease_timeout", lease_timeout),
        process=checks.process_id(process),
        known=checks.known_incarnation(known),
        capacity=checks.capacity(capacity),
    )


class Entering:
    """The hook a checked verb calls before it checks its arguments."""

    def _entering(self, verb: str) -> None:
        """Called before the arguments are checked (the memory backend's faults and
        counters meet a call there, as a network failure comes before the server)."""


class RegisterVerb(Entering):
    """``register`` over one hook; a backend's membership class inherits it."""

    def register(
        self, site: str, name: str, lease_timeout: float, *, process: str = "",
        known: int | None = None, capacity: float = 1.0,
    ) -> Registration:  # fmt: skip
        self._entering("register")
        joining = checked(
            site, name, lease_timeout, process=process, known=known, capacity=capacity
        )
        return self._register(joining)

    def _register(self, joining: Joining) -> Registration:
        """Write ``joining``'s new incarnation (base.CoordinationBackend.register)."""
        raise NotImplementedError


@attrs.frozen
class DrainOrder:
    """``set_drain``'s arguments, checked: drain (for ``duration`` seconds, None
    until undrained, with ``note`` saying who and why) or undrain ``name``."""

    site: str
    name: str
    drained: bool
    duration: float | None
    note: str


class DrainVerb(Entering):
    """``set_drain`` over one hook; a backend's membership class inherits it."""

    def set_drain(
        self, site: str, name: str, drained: bool, *, duration: float | None = None,
        note: str = "",
    ) -> NodeRecord | None:  # fmt: skip
        self._entering("set_drain")
        order = DrainOrder(
            checks.site_name(site),
            checks.node_name(name),
            bool(drained),
            checks.drain_duration(duration),
            checks.drain_note(note),
        )
        return self._set_drain(order)

    def _set_drain(self, order: DrainOrder) -> NodeRecord | None:
        """Write ``order`` to the name's row (base.OperatorBackend.set_drain)."""
        raise NotImplementedError
