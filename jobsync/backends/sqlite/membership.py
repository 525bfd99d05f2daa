"""Sites and membership on SQLite: ensure_site, site_info, register, heartbeat,
mark_leaving, deregister, read_nodes.

Every judgement of an incarnation is ``jobsync.core.rules``': the takeover a
registration makes (``rules.takeover``), a heartbeat's outcome
(``rules.heartbeat``), *live* (``rules.is_live``) and whether a leaving
incarnation's row stays as a tombstone (``rules.leaves_tombstone``).  SQLite
locks the whole file for a write, so ``deregister`` never skips a claim row.
"""

from __future__ import annotations

import sqlite3

import attrs

from jobsync.backends import _checks as C
from jobsync.backends.base import (
    NODE_ACTIVE,
    NODE_DEAD,
    NODE_LEAVING,
    Glance,
    Heartbeat,
    HeartbeatOutcome,
    NodeRecord,
    Registration,
    SiteInfo,
)
from jobsync.backends.node_verbs import DrainOrder, DrainVerb, RegisterVerb
from jobsync.backends.sqlite import queries as Q
from jobsync.backends.sqlite import rows as R
from jobsync.backends.sqlite.session import _Session
from jobsync.core import rules
from jobsync.core.errors import ConfigMismatch
from jobsync.core.hashing import validate_hash_function, validate_total_tokens
from jobsync.core.model import Joining


class _Membership(RegisterVerb, DrainVerb, _Session):
    """Sites and the node rows' lifecycle."""

    def ensure_site(self, site: str, total_tokens: int, hash_function: str) -> SiteInfo:
        C.site_name(site)
        total = validate_total_tokens(total_tokens)
        hash_name = validate_hash_function(hash_function)
        with self._tx("ensure_site") as conn:
            if conn.execute(Q.SELECT_SITE, (site,)).fetchone() is None:
                conn.execute(Q.INSERT_SITE, (site, total, hash_name, 0, self._clock()))
                conn.execute(Q.INSERT_TOKENS, (site, total, 0))
            found = self._site(conn, site)
        stored_total, stored_hash = found[R.TOTAL], found[R.HASH]
        if (stored_total, stored_hash) != (total, hash_name):
            raise ConfigMismatch(
                f"site {site!r} stores total_tokens={stored_total}, hash_function={stored_hash!r};"
                f" got total_tokens={total}, hash_function={hash_name!r}"
            )
        return R.site_info(found)

    def site_info(self, site: str) -> SiteInfo | None:
        C.site_name(site)
        with self._tx("site_info", write=False) as conn:
            if conn.execute(Q.SELECT_SITE, (site,)).fetchone() is None:
                return None
            return R.site_info(self._site(conn, site))

    def _register(self, joining: Joining) -> Registration:
        site, name = joining.site, joining.name
        with self._tx("register") as conn:
            info, now = self._site(conn, site), self._clock()
            incarnation = info[R.INCARNATIONS] + 1
            node = rules.takeover(self._nodes(conn, site).get(name), joining, incarnation, now)
            fence = node.fence_until
            row = (
                site, name, incarnation, now, now, node.lease_timeout, NODE_ACTIVE, fence,
                node.process, node.capacity, node.drained_at, node.drain_until, node.drain_note,
            )  # fmt: skip
            conn.execute(Q.UPSERT_NODE, row)
            conn.execute(Q.TAKE_INCARNATION, (site, incarnation))
            conn.execute(Q.BUMP, (site,))
        return Registration(
            incarnation=incarnation, registered_at=now, change_counter=info[R.COUNTER] + 1,
            fence_until=fence,
        )  # fmt: skip

    def set_capacity(self, site: str, name: str, incarnation: int, capacity: float) -> bool:
        self._member(site, name, incarnation)
        cap = C.capacity(capacity)
        return self._change_node("set_capacity", site, name, incarnation, capacity=cap)

    def _set_drain(self, order: DrainOrder) -> NodeRecord | None:
        site, until, text = order.site, order.duration, order.note
        with self._tx("set_drain") as conn:
            self._site(conn, site)
            node = self._nodes(conn, site).get(order.name)
            if node is None:
                return None
            now = self._clock()
            new = rules.drain(node, now, until, text) if order.drained else rules.undrain(node)
            self._write_plan_inputs(conn, site, node, new)
            return new

    def _change_node(
        self, verb: str, site: str, name: str, incarnation: int, *, capacity: float
    ) -> bool:
        with self._tx(verb) as conn:
            self._site(conn, site)
            node = self._nodes(conn, site).get(name)
            if node is None or node.incarnation != incarnation:
                return False
            self._write_plan_inputs(conn, site, node, attrs.evolve(node, capacity=capacity))
            return True

    @staticmethod
    def _write_plan_inputs(
        conn: sqlite3.Connection, site: str, old: NodeRecord, new: NodeRecord
    ) -> None:
        if new != old:
            params = (site, new.name, new.capacity, new.drained_at, new.drain_until)
            conn.execute(Q.SET_NODE_PLAN_INPUTS, (*params, new.drain_note))
            conn.execute(Q.BUMP, (site,))

    def heartbeat(
        self, site: str, name: str, incarnation: int, *, watch: str | None = None,
        leading: bool = False,
    ) -> Heartbeat:  # fmt: skip
        """Reads the site row, the name's row and the watched row by their keys;
        every node row only when ``leading``."""
        self._member(site, name, incarnation)
        watch, leading = C.heartbeat_asks(watch, leading)
        with self._tx("heartbeat") as conn:
            info, now = self._site(conn, site), self._clock()
            node = _node(conn, site, name)
            outcome, after = rules.heartbeat(node, incarnation, now)
            if outcome is HeartbeatOutcome.RENEWED:
                conn.execute(Q.RENEW, (site, name, now))
            elif after is not node:  # found expired: never renewable again
                conn.execute(Q.MARK_DEAD, (site, name, incarnation))
            watched = None if watch in (None, name) else _node(conn, site, watch)
            others = (
                [n.lease_expires for n in self._nodes(conn, site).values()
                 if n.name != name and rules.is_live(n, now)]
                if leading else None
            )  # fmt: skip
        return Heartbeat(
            outcome=outcome, now=now, change_counter=info[R.COUNTER], plan_basis=info[R.BASIS],
            earliest_other_expiry=min(others, default=None) if others is not None else None,
            live_others=None if others is None else len(others),
            watched_expiry=(
                watched.lease_expires
                if watched is not None and rules.is_live(watched, now) else None
            ),
        )  # fmt: skip

    def mark_leaving(self, site: str, name: str, incarnation: int) -> bool:
        self._member(site, name, incarnation)
        with self._tx("mark_leaving") as conn:
            self._site(conn, site)
            node = self._nodes(conn, site).get(name)
            if (
                node is None
                or node.incarnation != incarnation
                or not rules.is_live(node, self._clock())
            ):
                return False
            if node.state != NODE_LEAVING:
                conn.execute(Q.SET_STATE, (site, name, NODE_LEAVING))
                conn.execute(Q.BUMP, (site,))
            return True

    def deregister(self, site: str, name: str, incarnation: int) -> bool:
        self._member(site, name, incarnation)
        with self._tx("deregister") as conn:
            self._site(conn, site)
            now, node = self._clock(), self._nodes(conn, site).get(name)
            if node is None or node.incarnation != incarnation:
                return False
            changed = conn.execute(Q.FREE_TOKENS, (site, incarnation)).rowcount
            changed += conn.execute(Q.RELEASE_CLAIMS, (site, incarnation)).rowcount
            # The whole file is locked: no claim is ever skipped, so only a fence keeps a row.
            if not rules.leaves_tombstone(node, now, claims_left=False):
                changed += conn.execute(Q.DELETE_NODE, (site, name)).rowcount
            elif node.state != NODE_DEAD:  # a tombstone: the older incarnation stays fenced
                changed += conn.execute(Q.BURY_NODE, (site, name, incarnation)).rowcount
            if changed:  # a repeat on a tombstone (its reply lost) writes nothing
                conn.execute(Q.BUMP, (site,))
            return bool(changed)

    def read_nodes(self, site: str) -> tuple[float, tuple[NodeRecord, ...]]:
        C.site_name(site)
        with self._tx("read_nodes", write=False) as conn:
            self._site(conn, site)
            return self._clock(), R.seniority(self._nodes(conn, site).values())

    def glance(self, site: str, name: str) -> Glance:
        C.site_name(site)
        C.node_name(name)
        with self._tx("glance", write=False) as conn:
            self._site(conn, site)
            now = self._clock()
            leader = rules.oldest_live(self._nodes(conn, site).values(), now)
            return Glance(now=now, own=_node(conn, site, name), leader=leader)


def _node(conn: sqlite3.Connection, site: str, name: str) -> NodeRecord | None:
    """One node row by its key, or None."""
    row = conn.execute(Q.SELECT_NODE, (site, name)).fetchone()
    return None if row is None else R.node(row)
