"""Rows <-> values for the SQLite backend, and pure arithmetic over token rows.

Pure means no connection and no clock: the mixins run the statements and pass
``now`` in.  A row is a tuple in the column order ``schema`` lists; the
positions below name its fields.  Protocol judgements (liveness, lease
expiry, destinations) are ``jobsync.core.rules``'; this module only shapes
rows around them.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Mapping
from typing import Any

from jobsync.backends.base import (
    NODE_ACTIVE,
    NODE_LEAVING,
    AuditRecord,
    HistoryEntry,
    HistoryRecord,
    LockRecord,
    LockSpec,
    NodeRecord,
    PlanCommit,
    SiteInfo,
)
from jobsync.core import rules

Row = tuple[Any, ...]
_RUNNING = (NODE_ACTIVE, NODE_LEAVING)
# Positions in a sync_site row (schema.SITE_COLUMNS) and a token row (schema.TOKEN_COLUMNS).
TOTAL, HASH, GENERATION, COUNTER, BASIS, SIGNAL, INCARNATIONS, FLOOR = 1, 2, 3, 4, 5, 7, 8, 9
ID, OWNER, INC, EPOCH, DEST, DEADLINE = range(6)


def site_info(row: Row) -> SiteInfo:
    return SiteInfo(
        site=row[0], total_tokens=row[1], hash_function=row[2], generation=row[3],
        change_counter=row[4], plan_basis=row[5], created_at=row[6],
    )  # fmt: skip


def node(row: Row) -> NodeRecord:
    return NodeRecord(
        name=row[0], incarnation=row[1], registered_at=row[2], last_heartbeat=row[3],
        lease_timeout=row[4], state=row[5], fence_until=row[6], process=row[7],
        capacity=row[8], drained_at=row[9], drain_until=row[10], drain_note=row[11],
    )  # fmt: skip


def lock(row: Row) -> LockRecord:
    return LockRecord(
        task_key=row[0], token=row[1], patterns=tuple(json.loads(row[2])), reason=row[3],
        created_by=row[4], created_at=row[5], expires_at=row[6],
    )  # fmt: skip


def lock_params(site: str, creator: str, spec: LockSpec, now: float) -> Row:
    expires = None if spec.expires_in is None else now + spec.expires_in
    patterns = json.dumps(list(spec.patterns))
    return (site, spec.task_key, spec.token, patterns, spec.reason, creator, now, expires)


def audit(row: Row) -> AuditRecord:
    return AuditRecord(
        task_key=row[0], date=datetime.date.fromisoformat(row[1]), node=row[2],
        incarnation=row[3], token=row[4], epoch=row[5], status=row[6], claimed_at=row[7],
        completed_at=row[8],
    )  # fmt: skip


def history(row: Row) -> HistoryRecord:
    entry = HistoryEntry(
        trigger=row[3], nodes_before=tuple(json.loads(row[4])),
        nodes_after=tuple(json.loads(row[5])), moved=row[6], unowned=row[7], duration_ms=row[8],
        hot=None if row[9] is None else tuple(json.loads(row[9])),
    )  # fmt: skip
    return HistoryRecord(generation=row[0], leader=row[1], at=row[2], entry=entry)


def history_params(site: str, record: HistoryRecord) -> Row:
    e = record.entry
    return (
        site, record.generation, record.leader, record.at, e.trigger,
        json.dumps(list(e.nodes_before)), json.dumps(list(e.nodes_after)), e.moved, e.unowned,
        e.duration_ms, None if e.hot is None else json.dumps(list(e.hot)),
    )  # fmt: skip


# -- judgements and token-row arithmetic (pure; rows as TOKEN_COLUMNS) --------------
def running(node: NodeRecord | None, incarnation: int) -> bool:
    return node is not None and node.incarnation == incarnation and node.state in _RUNNING


class TokenColumns:
    """Token rows read by id, seen as the columns ``rules.plan_misfit`` indexes."""

    def __init__(self, rows: Mapping[int, Row]) -> None:
        self.owner = _Column(rows, OWNER)
        self.incarnation = _Column(rows, INC)
        self.epoch = _Column(rows, EPOCH)


class _Column:
    def __init__(self, rows: Mapping[int, Row], index: int) -> None:
        self._rows, self._index = rows, index

    def __getitem__(self, token: int) -> Any:
        return self._rows[token][self._index]


def plan_rows(
    site: str, commit: PlanCommit, rows: Mapping[int, Row], now: float
) -> tuple[list[Row], set[tuple[str, int]]]:
    """The token rows a plan changes (UPDATE_TOKEN parameters), and the incarnations it
    takes tokens from directly; the plan was already checked (``rules.plan_misfit``)."""
    updates: list[Row] = []
    dead: set[tuple[str, int]] = set()
    for a in commit.assigns:
        row = rows[a.token]
        if row[INC] is not None:
            dead.add((row[OWNER], row[INC]))
        updates.append((site, a.owner, a.incarnation, row[EPOCH] + 1, None, None, a.token))
    for r in commit.revokes:
        row = rows[r.token]
        deadline = row[DEADLINE]
        if deadline is None or row[DEST] != r.destination:  # the deadline never moves
            deadline = now + commit.ack_timeout if deadline is None else deadline
            updates.append((site, *row[OWNER:DEST], r.destination, deadline, r.token))
    return updates, dead


def handoff(site: str, row: Row, nodes: Mapping[str, NodeRecord], now: float) -> Row:
    """A finished release: to the destination's live incarnation, else unowned."""
    dest = nodes.get(row[DEST]) if row[DEST] is not None else None
    owner, incarnation = rules.destination(dest, now) or (None, None)
    return (site, owner, incarnation, row[EPOCH] + 1, None, None, row[ID])


def seniority(nodes: Iterable[NodeRecord]) -> tuple[NodeRecord, ...]:
    """Node records oldest first, as the verbs return them."""
    return tuple(sorted(nodes, key=rules.seniority))
