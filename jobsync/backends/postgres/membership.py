"""Membership on PostgreSQL: register, heartbeat, mark_leaving, deregister, read_nodes.

Each is one statement of ``member_queries`` (UPSERT_NODE, HEARTBEAT, DEREGISTER, ...),
which embodies the rule of ``jobsync.core.rules`` it is named after there; a
registration, a leave and a deregistration are short transactions that lock
the site row first and bump the change counter; a heartbeat is one
autocommit statement (one round trip) and bumps nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from jobsync.backends import _checks as checks
from jobsync.backends.base import NODE_ACTIVE, NODE_LEAVING
from jobsync.backends.node_verbs import DrainOrder, DrainVerb, RegisterVerb
from jobsync.backends.postgres import rows as V
from jobsync.backends.postgres.handle import Queries, _Handle, unknown_site
from jobsync.backends.postgres.session import Session
from jobsync.core.errors import NodeNameConflict
from jobsync.core.model import (
    Glance,
    Heartbeat,
    HeartbeatOutcome,
    Joining,
    NodeRecord,
    Registration,
)

_RUNNING = (NODE_ACTIVE, NODE_LEAVING)
_RowWrite = Callable[[Session, Queries, dict[str, object]], "str | bool"]


class _Membership(RegisterVerb, DrainVerb, _Handle):
    """The verbs of a node's own row."""

    def _register(self, joining: Joining) -> Registration:
        site, name, last = joining.site, joining.name, joining.known
        params = {
            "site": site,
            "name": name,
            "lease": joining.lease_timeout,
            "process": joining.process,
            "known": last,
            "capacity": joining.capacity,
            "channel": self._channel(site),
        }

        def body(s: Session, q: Queries) -> Registration:
            # A refusal raises inside the transaction, which rolls back the
            # incarnation counter's bump too: nothing is written.
            with s.transaction():
                row = s.execute(q["NEXT_INCARNATION"], {"site": site}).fetchone()
                if row is None:
                    raise unknown_site(site)
                inc, counter = row
                node = s.execute(q["UPSERT_NODE"], {**params, "inc": inc}).fetchone()
                assert node is not None
                refused, held, registered_at, fence = node[:4]
                if refused:
                    raise NodeNameConflict(
                        f"node name {name!r} of site {site!r} is held by incarnation {held}, "
                        f"registered by another process after this process's incarnation "
                        f"{last}; registration refused, nothing written"
                    )
            return Registration(
                incarnation=inc,
                registered_at=registered_at,
                change_counter=counter,
                fence_until=fence,
            )

        return self._call("register", site, body)

    def heartbeat(
        self, site: str, name: str, incarnation: int, *, watch: str | None = None,
        leading: bool = False,
    ) -> Heartbeat:  # fmt: skip
        site, name, inc = self._member(site, name, incarnation)
        watch, leading = checks.heartbeat_asks(watch, leading)
        params = {"site": site, "name": name, "inc": inc, "watch": watch, "leading": leading}

        def body(s: Session, q: Queries) -> Heartbeat:
            row = s.execute(q["HEARTBEAT"], params, prepare=True).fetchone()
            assert row is not None
            now, counter, basis, earliest, held, state, renewed, live_others, watched = row
            if counter is None:
                raise unknown_site(site)
            if held is not None and held > inc:
                outcome = HeartbeatOutcome.SUPERSEDED
            elif held == inc and state in _RUNNING and renewed:
                outcome = HeartbeatOutcome.RENEWED
            else:
                outcome = HeartbeatOutcome.EXPIRED
            return Heartbeat(
                outcome=outcome,
                now=now,
                change_counter=counter,
                plan_basis=basis,
                # summed here, as NodeRecord.lease_expires sums it
                earliest_other_expiry=None if earliest is None else earliest[0] + earliest[1],
                live_others=live_others,
                watched_expiry=None if watched is None else watched[0] + watched[1],
            )

        return self._call("heartbeat", site, body)

    def mark_leaving(self, site: str, name: str, incarnation: int) -> bool:
        def write(s: Session, q: Queries, params: dict[str, object]) -> str | bool:
            row = s.execute(q["LEAVING_STATE"], params).fetchone()
            if row is None or row[0] == NODE_LEAVING:  # not held, or a repeat
                return row is not None
            s.execute(q["SET_LEAVING"], params)
            return "leave"

        return self._own_row("mark_leaving", site, name, incarnation, write)

    def set_capacity(self, site: str, name: str, incarnation: int, capacity: float) -> bool:
        cap = checks.capacity(capacity)

        def write(s: Session, q: Queries, params: dict[str, object]) -> str | bool:
            row = s.execute(q["SET_CAPACITY"], {**params, "capacity": cap}).fetchone()
            assert row is not None
            held, changed = row
            return "capacity" if changed else bool(held)

        return self._own_row("set_capacity", site, name, incarnation, write)

    def _set_drain(self, order: DrainOrder) -> NodeRecord | None:
        site, drained = order.site, order.drained
        params = {"site": site, "name": order.name, "drained": drained}
        params.update(duration=order.duration, note=order.note)

        def body(s: Session, q: Queries) -> NodeRecord | None:
            with s.transaction():
                self._lock_site(s, q, site)
                row = s.execute(q["SET_DRAIN"], params).fetchone()
                if row is None:
                    return None
                if row[12]:
                    self._bump(s, q, site, "drain" if drained else "undrain")
            return V.node(row)

        return self._call("set_drain", site, body)

    def deregister(self, site: str, name: str, incarnation: int) -> bool:
        def write(s: Session, q: Queries, params: dict[str, object]) -> str | bool:
            row = s.execute(q["DEREGISTER"], params).fetchone()
            assert row is not None
            held, changed = row
            # a repeat (its first reply lost) writes nothing
            return "deregister" if held and changed else False

        return self._own_row("deregister", site, name, incarnation, write)

    def _own_row(self, verb: str, site: str, name: str, incarnation: int, write: _RowWrite) -> bool:
        """One write to a node's own row under the site lock: ``write`` returns why
        the change counter is bumped (the verb answers True), or the verb's answer
        when it wrote nothing."""
        site, name, inc = self._member(site, name, incarnation)
        params: dict[str, object] = {"site": site, "name": name, "inc": inc}

        def body(s: Session, q: Queries) -> bool:
            with s.transaction():
                self._lock_site(s, q, site)
                reason = write(s, q, params)
                if isinstance(reason, bool):
                    return reason
                self._bump(s, q, site, reason)
            return True

        return self._call(verb, site, body)

    def read_nodes(self, site: str) -> tuple[float, tuple[NodeRecord, ...]]:
        site = checks.site_name(site)

        def body(s: Session, q: Queries) -> tuple[float, tuple[NodeRecord, ...]]:
            rows = s.execute(q["READ_NODES"], {"site": site}).fetchall()
            if not rows[0][1]:
                raise unknown_site(site)
            nodes = [V.node(r[2:]) for r in rows if r[2] is not None]
            nodes.sort(key=lambda n: (n.registered_at, n.name))
            return rows[0][0], tuple(nodes)

        return self._call("read_nodes", site, body)

    def glance(self, site: str, name: str) -> Glance:
        site, name = checks.site_name(site), checks.node_name(name)

        def body(s: Session, q: Queries) -> Glance:
            row = s.execute(q["GLANCE"], {"site": site, "name": name}, prepare=True).fetchone()
            assert row is not None  # one row, whatever exists
            if not row[1]:
                raise unknown_site(site)
            own, leader = row[2:14], row[14:26]
            return Glance(
                now=row[0],
                own=None if own[0] is None else V.node(own),
                leader=None if leader[0] is None else V.node(leader),
            )

        return self._call("glance", site, body)
