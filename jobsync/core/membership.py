"""Membership: who is live and who leads, judged on one clock passed in.

Law (DESIGN.md section 5): a node is live while
``last_heartbeat > now - heartbeat_timeout``; a heartbeat exactly
``timeout`` old is dead, as in the README's monitoring SQL
(``last_heartbeat > now() - interval``).  The leader is the oldest live node:
earliest registration time on the backend's clock, then name.  Everything
here is a pure function of its arguments; ``now`` is the backend's clock.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from jobsync.core.errors import DuplicateNodeName, InvalidArgument
from jobsync.core.patterns import validate_node_name


@attrs.frozen(kw_only=True)
class Member:
    """One node as membership sees it.  Times are seconds on the backend's clock."""

    name: str = attrs.field(validator=lambda _i, _a, v: validate_node_name(v))
    registered_at: float
    last_heartbeat: float
    leaving: bool = False


def _check_timeout(timeout: float) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise InvalidArgument(f"heartbeat timeout must be a positive number, got {timeout!r}")
    return float(timeout)


def is_live(member: Member, now: float, timeout: float) -> bool:
    """True iff ``member.last_heartbeat > now - timeout`` (the boundary instant is dead)."""
    return member.last_heartbeat > now - timeout


def live_nodes(nodes: Iterable[Member], now: float, timeout: float) -> tuple[Member, ...]:
    """The live members, oldest first (registration time, then name).

    Raises DuplicateNodeName if a name appears twice, InvalidArgument for a
    non-positive timeout.
    """
    limit = now - _check_timeout(timeout)
    seen: set[str] = set()
    live: list[Member] = []
    for member in nodes:
        if member.name in seen:
            raise DuplicateNodeName(f"node name {member.name!r} appears twice")
        seen.add(member.name)
        if member.last_heartbeat > limit:
            live.append(member)
    live.sort(key=_seniority)
    return tuple(live)


def elect_leader(nodes: Iterable[Member], now: float, timeout: float) -> str | None:
    """The oldest live node's name (registration time, then name), or None."""
    live = live_nodes(nodes, now, timeout)
    return live[0].name if live else None


def _seniority(member: Member) -> tuple[float, str]:
    return (member.registered_at, member.name)
