"""Continuity: did the database a worker talks to lose commits that worker saw?

A failover to an asynchronous replica may lose the last commits of the old
primary: a plan that moved a token, an acknowledgement, a registration.  A
worker that saw those commits holds a snapshot the new primary never heard
of, and a worker the new primary still names as the token's holder may be
handed it again: two workers would answer True for one token.  So a worker
keeps the highest state it has seen (``Lineage``: the server's WAL timeline
when the backend reports one, the site's change counter and plan basis, which
never go backwards on one database) and, when an observation is not a
continuation of it (``broken``), stops claiming for a full heartbeat timeout
(``quarantine_end``): every lease granted on the lost history has ended by
then (no one can renew on a dead primary), so whatever the new primary says
is again the only truth.  It then reads its tokens afresh.

A new timeline is a promotion: the library cannot tell from the wire whether
the replica was synchronous (nothing lost), so it always pays the quarantine
after one; a counter below the highest seen is a loss whatever the timeline
says (a pooled connection, which reports no timeline, or a restore from a
backup).  Pure: no clock, no I/O; ``now`` is an argument.
"""

from __future__ import annotations

import attrs


@attrs.frozen(kw_only=True)
class Lineage:
    """What a worker has seen of one site on one database history."""

    timeline: str | None
    """The server's WAL timeline (None: not reported, e.g. behind a pooler)."""
    change_counter: int
    plan_basis: int


def broken(seen: Lineage | None, observed: Lineage) -> str | None:
    """Why ``observed`` is not a continuation of ``seen`` (None if it is).

    Not a continuation: a different timeline (both known), or the change
    counter or plan basis below the highest seen.
    """
    if seen is None:
        return None
    known = seen.timeline is not None and observed.timeline is not None
    if known and observed.timeline != seen.timeline:
        return f"the database's timeline changed from {seen.timeline} to {observed.timeline}"
    if observed.change_counter < seen.change_counter:
        return (
            f"the site's change counter went back from {seen.change_counter} "
            f"to {observed.change_counter}"
        )
    if observed.plan_basis < seen.plan_basis:
        return f"the site's plan basis went back from {seen.plan_basis} to {observed.plan_basis}"
    return None


def advanced(seen: Lineage | None, observed: Lineage) -> Lineage:
    """The highest state seen after ``observed`` (which must not be ``broken``; after a
    break the caller starts again from ``observed``)."""
    if seen is None:
        return observed
    return Lineage(
        timeline=observed.timeline if observed.timeline is not None else seen.timeline,
        change_counter=max(seen.change_counter, observed.change_counter),
        plan_basis=max(seen.plan_basis, observed.plan_basis),
    )


def quarantine_end(now: float, heartbeat_timeout: float) -> float:
    """Until when a worker that noticed a break claims nothing: one full lease
    (``heartbeat_timeout``) after ``now``, so every lease granted on the lost
    history has run out."""
    return now + heartbeat_timeout
