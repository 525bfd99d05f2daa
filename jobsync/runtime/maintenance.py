"""Planned maintenance and capacity: drain a worker to zero tokens, give its share back.

An operator (``jobsync drain``), an automation (``drain_node``) or the worker
itself (``job.start_maintenance``) marks the node's row drained
(``Backend.set_drain``); the change counter moves, the leader plans the node
to zero with the usual fenced revoke and acknowledge (``runtime/leader.py``),
and keeps it there until it is undrained or the drain's duration ends.  The
worker stays alive and keeps heartbeating: its ``can_claim_task`` answers
False from the moment it reads that it is drained, and its health reports
``draining`` while it still holds tokens, ``drained`` at zero.

Before writing, ``drain_node`` asks ``drain_problems`` what the drain would
do that an operator may not want: several nodes drained at once, the last
undrained node drained (every token unowned), or pinned tokens left with no
eligible node.  Any of these refuses the drain (``DrainRefused``, one line)
unless ``force`` is given.  Undraining is always safe.

``CapacityMethods`` are the Job's: ``capacity``, ``set_capacity`` (stored in
the row, planned at once), ``start_maintenance``, ``end_maintenance`` and
``maintenance``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from jobsync.backends.base import ClusterView, NodeRecord, OperatorBackend
from jobsync.backends.url import open_backend
from jobsync.core import rules
from jobsync.core.capacity import validate_capacity
from jobsync.core.errors import ConflictError, InvalidArgument
from jobsync.core.locks import resolve_locks
from jobsync.core.model import NODE_ACTIVE
from jobsync.core.planner import plan

if TYPE_CHECKING:
    from jobsync.backends.base import Backend
    from jobsync.runtime.modes import Session


class DrainRefused(ConflictError):
    """A drain that would do something an operator may not want; nothing was written.

    The message says what, in one line; ``force=True`` (``--force``) drains anyway."""


def drain_problems(view: ClusterView, name: str) -> tuple[str, ...]:
    """What draining ``name`` now would do beyond moving its tokens, in words (empty: nothing)."""
    now = view.now
    live = [n for n in view.nodes if rules.is_live(n, now) and n.state == NODE_ACTIVE]
    row = next((n for n in view.nodes if n.name == name), None)
    problems: list[str] = []
    if row is None or row not in live:
        problems.append(f"node {name!r} is not a live worker of site {view.site.site!r}")
    others = sorted(n.name for n in live if n.is_drained(now) and n.name != name)
    if others:
        problems.append(f"{', '.join(others)} already drained")
    before = [n for n in live if not n.is_drained(now)]
    after = [n for n in before if n.name != name]
    if before and not after:
        problems.append("no other undrained worker would be left: every token becomes unowned")
        return tuple(problems)
    pins = resolve_locks(view.locks, now).pins
    total, owners = view.site.total_tokens, view.tokens.owner
    was = len(plan(total, owners, sorted(n.name for n in before), pins).unowned)
    will = len(plan(total, owners, sorted(n.name for n in after), pins).unowned)
    if will > was:
        problems.append(f"{will - was} pinned tokens would have no eligible worker")
    return tuple(problems)


def drain_node(
    backend: Backend | str,
    site: str,
    name: str,
    *,
    duration: float | None = None,
    reason: str = "",
    by: str = "",
    force: bool = False,
) -> NodeRecord:
    """Drain worker ``name`` of ``site``: the leader plans it to zero tokens.

    ``backend`` is a Backend or a backend URL (opened for this call and
    closed).  For ``duration`` seconds (None: until ``undrain_node``).  ``by``
    and ``reason`` are recorded with the drain and named in the rebalance
    history.  Raises ``DrainRefused`` naming what ``drain_problems`` found,
    unless ``force``; InvalidArgument for a bad argument or an unknown node.
    Returns the row as written.
    """
    note = _note(by, reason)
    with _opened(backend) as db:
        problems = drain_problems(db.read_cluster(site), name)
        if problems and not force:
            raise DrainRefused(
                f"drain of {name!r} refused: {'; '.join(problems)} (force to drain anyway)"
            )
        return _written(db.set_drain(site, name, True, duration=duration, note=note), site, name)


def undrain_node(backend: Backend | str, site: str, name: str) -> NodeRecord:
    """End ``name``'s drain: the leader gives it its share back with the fewest moves.

    ``backend`` is a Backend or a backend URL; InvalidArgument for an unknown node."""
    with _opened(backend) as db:
        return _written(db.set_drain(site, name, False), site, name)


@contextlib.contextmanager
def _opened(target: Backend | str) -> Iterator[Backend]:
    if not isinstance(target, str):
        if not isinstance(target, OperatorBackend) or not hasattr(target, "read_cluster"):
            raise InvalidArgument(f"expected a Backend or a backend URL, got {target!r}")
        yield target
        return
    db = open_backend(target, "jobsync-maintenance")
    try:
        yield db
    finally:
        db.close()


def _written(row: NodeRecord | None, site: str, name: str) -> NodeRecord:
    if row is None:
        raise InvalidArgument(f"site {site!r} has no node named {name!r}")
    return row


def _note(by: object, reason: object) -> str:
    for label, value in (("by", by), ("reason", reason)):
        if not isinstance(value, str):
            raise InvalidArgument(f"drain {label} must be a string, got {value!r}")
    assert isinstance(by, str) and isinstance(reason, str)
    if by and reason:
        return f"by {by}: {reason}"
    return f"by {by}" if by else reason


class CapacityMethods:
    """The Job's capacity and planned maintenance, from the attributes the Job sets."""

    name: str
    site: str
    _capacity: float
    _session: Session
    _require_backend: Callable[[], Backend]  # ReportMethods'

    @property
    def capacity(self) -> float:
        """This worker's capacity: its share of tokens is proportional to it."""
        return self._capacity

    def set_capacity(self, capacity: float) -> None:
        """Change this worker's capacity now: stored in its row, and the leader plans
        the new split at once (the fewest moves, the usual fenced hand-offs).
        Before the Job has entered, the capacity it will register with."""
        value = validate_capacity(capacity)
        self._capacity = value
        node = self._session.node
        if node is None:
            return
        node.capacity = value  # every later registration carries it
        incarnation = node.incarnation
        if incarnation is not None:
            self._require_backend().set_capacity(self.site, self.name, incarnation, value)

    def start_maintenance(
        self, duration: float | None = None, *, reason: str = "", force: bool = False
    ) -> NodeRecord:
        """Drain this worker for planned maintenance (``drain_node`` on itself): it
        stays alive and claims nothing while its tokens move to the others."""
        backend = self._require_backend()
        return drain_node(
            backend, self.site, self.name, duration=duration, reason=reason, by=self.name,
            force=force,
        )  # fmt: skip

    def end_maintenance(self) -> NodeRecord:
        """Undrain this worker: the leader gives it its share back."""
        return undrain_node(self._require_backend(), self.site, self.name)

    @property
    def maintenance(self) -> str | None:
        """None, ``"draining"`` (drained by an operator, tokens still held) or
        ``"drained"`` (at zero tokens), as of the node's latest read."""
        node = self._session.node
        return None if node is None else node.maintenance
