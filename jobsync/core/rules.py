"""The protocol's rules: each one pure function, judged on a clock passed in.

Theory of operation.  Ownership is a table written by one leader, and two
promises must hold while processes pause, crash, lose replies and race:
at most one live process may claim a token at any instant, and every token
whose pins can be met gets a live owner soon.  Every judgement that keeps
those promises is a function below, of rows and ``now`` (the backend's
clock) only.  The memory and SQLite backends call these functions; the
PostgreSQL backend runs their SQL form (``backends/postgres/queries.py``
names the function each macro or statement mirrors), and a property test
(``tests/backends/test_rule_agreement.py``) feeds the same random rows to a
rule and to every backend and demands the same answer.  The runtime's
leader and the command line call them too.  A rule written twice drifts,
and the drift is where two owners come from.

The rules, in the order a row lives through them:

- ``takeover``: registering a name builds its new row.  An older live
  incarnation of *another* process leaves a fence (its lease end) that the
  new incarnation's tokens wait out; one of the caller's own process does
  not (it fenced itself, or never heard its registration's reply).  A
  process that registers again after losing its lease and finds a newer
  incarnation of another process is refused: it was superseded.
- ``is_live``: active or leaving and ``last_heartbeat + lease > now``
  (strict: the boundary instant is dead).  Leadership, release destinations
  and ``mark_leaving`` count live nodes.
- ``oldest_live``: the leader is the oldest live node (registration time,
  then name).
- ``heartbeat``: renews only an unexpired lease of the row's own
  incarnation; marks an expired one dead (so it can never be renewed);
  answers SUPERSEDED to an older incarnation and EXPIRED otherwise.
- ``holding``: what a token row's holder is to a plan: nobody, live (revoke
  it), expired (take the token directly) or waiting (neither yet: an
  evicted incarnation within its lease, an older incarnation inside a
  fence).  ``lease_expired`` is "expired" (or nobody): the only state from
  which a token moves without its holder's acknowledgement, and in which a
  holder's open claims are released.  Dead is final: a dead row of the
  incarnation counts as expired whatever its timestamps say.
- ``destination``: a released token goes to its destination's live
  incarnation, or becomes unowned.
- ``plan_misfit``: a plan may commit only against exactly the rows it read:
  same generation, the writer still the oldest live node, every written
  token still at the incarnation and epoch it expected, every direct
  assignment's holder expired at the commit instant.
- ``leaves_tombstone``: deregistering keeps a dead row while it still
  fences an older incarnation or still has claims to reap; ``purgeable``:
  a dead row is deleted once it has been dead long enough and nothing names
  it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Protocol, TypeVar

import attrs

from jobsync.core.errors import ConflictError, NodeNameConflict, NotLeader
from jobsync.core.model import (
    DEAD_NODE_RETENTION,
    NODE_ACTIVE,
    NODE_DEAD,
    NODE_LEAVING,
    DirectAssign,
    HeartbeatOutcome,
    Joining,
    NodeRecord,
    PlanCommit,
    Revoke,
)

RUNNING = (NODE_ACTIVE, NODE_LEAVING)
"""States in which an incarnation may be live."""


_V_co = TypeVar("_V_co", covariant=True)


class Column(Protocol[_V_co]):
    """One column of token rows, indexed by token id."""

    def __getitem__(self, token: int, /) -> _V_co: ...


class TokenRows(Protocol):
    """Token rows as columns indexed by token id (``TokenTable``, a store's own
    mutable rows read in place, or only the rows a plan writes)."""

    @property
    def owner(self) -> Column[str | None]: ...

    @property
    def incarnation(self) -> Column[int | None]: ...

    @property
    def epoch(self) -> Column[int]: ...


def is_live(row: NodeRecord, now: float) -> bool:
    """Active or leaving, and ``last_heartbeat + lease_timeout > now`` (strict)."""
    return row.state in RUNNING and row.last_heartbeat + row.lease_timeout > now


def seniority(row: NodeRecord) -> tuple[float, str]:
    """The order of leadership: registration time on the backend's clock, then name."""
    return (row.registered_at, row.name)


def oldest_live(nodes: Iterable[NodeRecord], now: float) -> NodeRecord | None:
    """The leader: the oldest live node, or None when none is live."""
    return min((n for n in nodes if is_live(n, now)), key=seniority, default=None)


def heartbeat(
    row: NodeRecord | None, incarnation: int, now: float
) -> tuple[HeartbeatOutcome, NodeRecord | None]:
    """The outcome of ``incarnation``'s heartbeat on ``row`` at ``now``, and the row
    to store (unchanged unless renewed or found expired)."""
    if row is not None and row.incarnation > incarnation:
        return HeartbeatOutcome.SUPERSEDED, row
    if row is None or row.incarnation != incarnation or row.state not in RUNNING:
        return HeartbeatOutcome.EXPIRED, row
    if row.lease_expires <= now:
        return HeartbeatOutcome.EXPIRED, attrs.evolve(row, state=NODE_DEAD)
    return HeartbeatOutcome.RENEWED, attrs.evolve(row, last_heartbeat=now)


def same_process(row: NodeRecord, process: str) -> bool:
    """The row was registered by the caller's own process (an empty identity is nobody's)."""
    return process != "" and row.process == process


def takeover(old: NodeRecord | None, joining: Joining, incarnation: int, now: float) -> NodeRecord:
    """The row a registration writes over ``old`` (the name's current row, if any).

    The new row has ``joining.capacity``; an operator's drain on ``old`` carries over
    (planned maintenance outlasts a restart while the name's row exists).

    Raises NodeNameConflict when ``joining.known`` (the caller's last
    incarnation) is older than ``old``'s and ``old`` belongs to another process.
    """
    name, process, known = joining.name, joining.process, joining.known
    fence = 0.0
    if old is not None:
        mine = same_process(old, process)
        if known is not None and old.incarnation > known and not mine:
            raise NodeNameConflict(
                f"node name {name!r} of site {joining.site!r} is held by incarnation "
                f"{old.incarnation} of another process, newer than this process's {known}"
            )
        fence = old.fence_until
        if old.state != NODE_DEAD and not mine:
            fence = max(fence, old.lease_expires)
    return NodeRecord(
        name=name,
        incarnation=incarnation,
        registered_at=now,
        last_heartbeat=now,
        lease_timeout=joining.lease_timeout,
        state=NODE_ACTIVE,
        fence_until=fence,
        process=process,
        capacity=joining.capacity,
        drained_at=None if old is None else old.drained_at,
        drain_until=None if old is None else old.drain_until,
        drain_note="" if old is None else old.drain_note,
    )


def drain(row: NodeRecord, now: float, duration: float | None, note: str) -> NodeRecord:
    """``row`` drained from ``now``: for ``duration`` seconds, or until undrained (None)."""
    until = None if duration is None else now + duration
    return attrs.evolve(row, drained_at=now, drain_until=until, drain_note=note)


def undrain(row: NodeRecord) -> NodeRecord:
    """``row`` with no drain."""
    return attrs.evolve(row, drained_at=None, drain_until=None, drain_note="")


class Hold(enum.Enum):
    """What a token row's holding incarnation is to a plan."""

    NONE = "none"
    LIVE = "live"
    EXPIRED = "expired"
    WAITING = "waiting"


def holding(
    row: NodeRecord | None, incarnation: int | None, now: float
) -> tuple[Hold, float | None]:
    """Classify the holder (``incarnation`` of the row's name, ``row`` that name's row).

    Returns the class and, for WAITING, the instant it ends (lease end or fence end).
    """
    if incarnation is None:
        return Hold.NONE, None
    if row is None or row.incarnation < incarnation:
        return Hold.EXPIRED, None  # no row: it deregistered
    if row.incarnation == incarnation:
        if row.state == NODE_DEAD:
            return Hold.EXPIRED, None  # dead is final
        if is_live(row, now):
            return Hold.LIVE, None
        if row.lease_expires <= now:
            return Hold.EXPIRED, None
        return Hold.WAITING, row.lease_expires  # evicted, still within its lease
    if row.fence_until <= now:
        return Hold.EXPIRED, None
    return Hold.WAITING, row.fence_until  # a newer incarnation fences it


def lease_expired(row: NodeRecord | None, incarnation: int, now: float) -> bool:
    """base.py's "lease expired": its tokens may move without it, its claims be released."""
    return holding(row, incarnation, now)[0] is Hold.EXPIRED


def destination(row: NodeRecord | None, now: float) -> tuple[str, int] | None:
    """Where a released token goes: the destination's live incarnation, else nowhere."""
    if row is not None and is_live(row, now):
        return row.name, row.incarnation
    return None


def plan_misfit(
    commit: PlanCommit,
    *,
    site: str,
    generation: int,
    tokens: TokenRows,
    nodes: Mapping[str, NodeRecord],
    now: float,
    expiry_recheck: bool = True,
) -> None:
    """Raise if ``commit`` no longer fits the rows it read (nothing may be written).

    ConflictError: another plan committed (generation), a written token no
    longer holds the expected incarnation and epoch, or a direct assignment's
    holder still holds its lease at ``now``.  NotLeader: the writer is not the
    oldest live node.  ``expiry_recheck`` False is the test-only defect of
    trusting the leader's earlier read (``Defences.expiry_recheck``).
    """
    if commit.expected_generation != generation:
        raise ConflictError(
            f"site {site!r} is at generation {generation}; the plan expected "
            f"{commit.expected_generation}"
        )
    leader = oldest_live(nodes.values(), now)
    if leader is None or (leader.name, leader.incarnation) != (
        commit.leader,
        commit.leader_incarnation,
    ):
        oldest = "no live node" if leader is None else f"{leader.name!r} ({leader.incarnation})"
        raise NotLeader(
            f"{commit.leader!r} incarnation {commit.leader_incarnation} is not the oldest live "
            f"node of site {site!r}; the leader is {oldest}"
        )
    writes: tuple[DirectAssign | Revoke, ...] = (*commit.assigns, *commit.revokes)
    for write in writes:
        t = write.token
        if tokens.incarnation[t] != write.expected_incarnation or (
            tokens.epoch[t] != write.expected_epoch
        ):
            raise ConflictError(
                f"token {t} holds incarnation {tokens.incarnation[t]} at epoch "
                f"{tokens.epoch[t]}; the plan expected {write.expected_incarnation} at "
                f"{write.expected_epoch}"
            )
    if not expiry_recheck:
        return
    for assign in commit.assigns:
        held_by, owner = assign.expected_incarnation, tokens.owner[assign.token]
        row = nodes.get(owner) if owner is not None else None
        if held_by is not None and not lease_expired(row, held_by, now):
            raise ConflictError(
                f"token {assign.token}: incarnation {held_by} of {owner!r} still holds its "
                "lease; a live owner must be revoked, not reassigned"
            )


def leaves_tombstone(
    row: NodeRecord, now: float, *, claims_left: bool, keeps_fence: bool = True
) -> bool:
    """Deregistering ``row``: keep it, dead, instead of deleting it?

    Yes while it fences an older incarnation (``fence_until > now``: deleting
    it would read as that lease being over) or while claims of the leaving
    incarnation were skipped as locked (the leader must still see a node that
    is not live, to reap them).  ``keeps_fence`` False is the test-only defect
    (``Defences.deregister_keeps_fence``).
    """
    return (keeps_fence and row.fence_until > now) or claims_left


def purgeable(row: NodeRecord, now: float, *, named_by_tokens: bool) -> bool:
    """A dead row may be deleted: not live, its lease over by more than
    ``DEAD_NODE_RETENTION`` (strict), its fence over, and no token row naming it."""
    return (
        not is_live(row, now)
        and row.lease_expires + DEAD_NODE_RETENTION < now
        and row.fence_until <= now
        and not named_by_tokens
    )


def overdue(deadline: float | None, now: float) -> bool:
    """A pending release past its deadline (the boundary instant counts): evict its holder."""
    return deadline is not None and deadline <= now
