"""Registering a node: the verb's checks and signature, written once for every backend.

``RegisterVerb.register`` checks its arguments into a ``Joining`` (nothing is
written when one is bad) and hands it to the backend's ``_register`` hook; the
new row itself is ``rules.takeover``'s (PostgreSQL's UPSERT_NODE is its SQL form).
"""

from __future__ import annotations

from jobsync.backends import _checks as checks
from jobsync.core.model import Joining, Registration


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


class RegisterVerb:
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

    def _entering(self, verb: str) -> None:
        """Called before the arguments are checked (the memory backend's faults and
        counters meet a call there, as a network failure comes before the server)."""

    def _register(self, joining: Joining) -> Registration:
        """Write ``joining``'s new incarnation (base.CoordinationBackend.register)."""
        raise NotImplementedError
