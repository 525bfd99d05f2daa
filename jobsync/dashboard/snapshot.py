"""What the dashboard shows, as one JSON document built from one consistent read.

Pure: a ``ClusterView`` and the latest history records in, a JSON-ready dict
out, so every cell the page draws is reproducible from what was read.  It is
``jobsync status``'s report (``cli.report.status_report``: nodes, leader,
balance, unowned tokens, unsatisfied pins, lock conflicts, rebalances) plus
what a page needs to draw the token map:

- ``map.owners``: the owners' names, sorted; ``map.cells[t]``: the index of
  token ``t``'s owner in that list, ``-1`` when it is unowned (one small
  integer per token, never an object per token);
- ``map.pinned`` / ``map.pending``: tokens decided by a lock, tokens with a
  release in flight;
- ``locks``: every unexpired lock, whether it decides its token and whether
  one of its patterns matches a node the leader plans over;
- per node, ``health`` (see ``health``), its capacity and its drain state
  (``drained``: an operator's drain is in force; ``draining``: drained but
  still holding tokens, on their way to the others);
- ``hot``: tokens measured hot, when a caller supplies them.

``next_deadline`` is the earliest backend instant at which the same rows
would read differently without any write (a live node's lease end, a pending
release's deadline, a lock's expiry): a death bumps no counter, so the
server re-reads then.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from jobsync.backends.base import ClusterView, HistoryRecord, LockRecord
from jobsync.cli.report import Json, eligible_names, status_report
from jobsync.core import rules
from jobsync.core.locks import resolve_locks
from jobsync.core.patterns import match_pattern


def health(row: Json) -> str:
    """One word for a node row: down, leaving, handing off, late heartbeat or healthy.

    ``late heartbeat``: live, but silent for more than half its lease, so at
    least one heartbeat was missed (the lease is at least twice the interval).
    """
    state = row["state"]
    if state not in ("live", "leaving"):
        return "down"
    if state == "leaving":
        return "leaving"
    if _number(row["pending_releases"]) > 0:
        return "handing off"
    age = _number(row["heartbeat_age_sec"])
    lease = age + _number(row["lease_expires_in_sec"])
    return "late heartbeat" if age > lease / 2 else "healthy"


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) else 0.0


def build(
    view: ClusterView,
    history: Sequence[HistoryRecord],
    hot: Iterable[int] | None = None,
) -> Json:
    """The dashboard's document for ``view`` (see the module docstring)."""
    report = status_report(view, history)
    tokens = view.tokens
    owners = sorted({o for o in tokens.owner if o is not None})
    index = {name: i for i, name in enumerate(owners)}
    cells = [-1 if o is None else index[o] for o in tokens.owner]
    resolved = resolve_locks(view.locks, view.now)
    nodes = report["nodes"]
    assert isinstance(nodes, list)
    records = {n.name: n for n in view.nodes}
    for row in nodes:
        row["health"] = health(row)
        record = records[str(row["name"])]
        row.setdefault("capacity", record.capacity)
        drained = record.is_drained(view.now)
        row["drained"] = drained
        row["draining"] = drained and _number(row["tokens"]) > 0
        row["drain_until"] = record.drain_until if drained else None
        row["drain_note"] = record.drain_note if drained else ""
    report["map"] = {
        "owners": owners,
        "cells": cells,
        "pinned": sorted(resolved.pins),
        "pending": [t for t in range(len(tokens)) if tokens.is_pending(t)],
    }
    report["counts"] = {name: cells.count(i) for name, i in index.items()}
    report["lock_rows"] = lock_rows(view, view.locks)
    report["next_deadline"] = next_deadline(view)
    if hot is not None:
        report["hot"] = sorted(set(hot))
    return report


def lock_rows(view: ClusterView, locks: Sequence[LockRecord]) -> list[Json]:
    """Each unexpired lock: its token, patterns, whether it decides, whether it is met."""
    deciding = resolve_locks(locks, view.now).pins
    names = eligible_names(view)
    rows: list[Json] = []
    for lock in locks:
        if lock.expires_at is not None and lock.expires_at <= view.now:
            continue
        rows.append(
            {
                "task_id": lock.task_key,
                "token": lock.token,
                "patterns": list(lock.patterns),
                "reason": lock.reason,
                "created_by": lock.created_by,
                "expires_at": lock.expires_at,
                "decides": deciding.get(lock.token) == tuple(lock.patterns),
                "satisfied": any(match_pattern(p, n) for p in lock.patterns for n in names),
                "owner": view.tokens.owner[lock.token],
            }
        )
    return rows


def next_deadline(view: ClusterView) -> float | None:
    """The earliest instant the rows change meaning on their own (None: never)."""
    now = view.now
    instants = [n.lease_expires for n in view.nodes if rules.is_live(n, now)]
    instants += [d for d in view.tokens.pending_deadline if d is not None and d > now]
    instants += [lk.expires_at for lk in view.locks if lk.expires_at is not None]
    later = [t for t in instants if t > now]
    return min(later) if later else None
