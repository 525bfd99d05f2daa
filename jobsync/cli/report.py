"""What the operator's commands report, computed from one consistent snapshot.

Pure functions of backend values (a ``ClusterView``, history records): no
I/O here, so every number ``status`` prints is reproducible from what was
read.  The judgements are the library's own (``jobsync.core.rules``): a
node is live by ``rules.is_live`` on the backend's clock, the leader is
``rules.oldest_live``, a pin is decided by ``resolve_locks`` (earliest lock on a token wins)
and satisfied when one of its patterns, in order, matches a live node that
is not leaving (the nodes the leader plans over).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from jobsync.backends.base import (
    NODE_ACTIVE,
    NODE_EVICTED,
    NODE_LEAVING,
    ClusterView,
    HistoryRecord,
    LockRecord,
    NodeRecord,
)
from jobsync.core import rules
from jobsync.core.hashing import canonical, token_function
from jobsync.core.locks import resolve_locks
from jobsync.core.patterns import match_pattern

Json = dict[str, object]


def node_state(node: NodeRecord, now: float) -> str:
    """live, leaving, evicted (not live, lease still running) or dead."""
    kind, _ = rules.holding(node, node.incarnation, now)
    if kind is rules.Hold.LIVE:
        return "leaving" if node.state == NODE_LEAVING else "live"
    if kind is rules.Hold.WAITING and node.state == NODE_EVICTED:
        return "evicted"
    return "dead"


def leader_of(nodes: Iterable[NodeRecord], now: float) -> NodeRecord | None:
    return rules.oldest_live(nodes, now)


def eligible_names(view: ClusterView) -> list[str]:
    """The nodes a plan gives tokens to: live, not leaving and not drained (as the leader's)."""
    now = view.now
    return sorted(
        n.name
        for n in view.nodes
        if rules.is_live(n, now) and n.state == NODE_ACTIVE and not n.is_drained(now)
    )


def node_rows(view: ClusterView) -> list[Json]:
    now, tokens = view.now, view.tokens
    held = Counter(o for o in tokens.owner if o is not None)
    pending = Counter(
        o for t, o in enumerate(tokens.owner) if o is not None and tokens.is_pending(t)
    )
    leader = leader_of(view.nodes, now)
    return [
        {
            "name": n.name,
            "state": node_state(n, now),
            "stored_state": n.state,
            "incarnation": n.incarnation,
            "leader": leader is not None and n.name == leader.name,
            "heartbeat_age_sec": round(now - n.last_heartbeat, 3),
            "lease_expires_in_sec": round(n.lease_expires - now, 3),
            "registered_at": n.registered_at,
            # A dead node's time up stopped with its last heartbeat: no uptime.
            "uptime_sec": round(now - n.registered_at, 3) if rules.is_live(n, now) else None,
            "lived_sec": round(n.last_heartbeat - n.registered_at, 3),
            "tokens": held.get(n.name, 0),
            "pending_releases": pending.get(n.name, 0),
            "capacity": n.capacity,
            # planned maintenance: None, "draining" (tokens still held) or "drained"
            "maintenance": (
                ("draining" if held.get(n.name, 0) else "drained") if n.is_drained(now) else None
            ),
            "drain_until": n.drain_until if n.is_drained(now) else None,
            "drain_note": n.drain_note if n.is_drained(now) else "",
        }
        for n in view.nodes
    ]


def _deciding_locks(locks: Sequence[LockRecord], now: float) -> dict[int, LockRecord]:
    """token -> the lock that decides it (earliest created_at, then task key)."""
    best: dict[int, LockRecord] = {}
    for lock in sorted(locks, key=lambda lk: (lk.created_at, lk.task_key)):
        if lock.expires_at is not None and lock.expires_at <= now:
            continue
        best.setdefault(lock.token, lock)
    return best


def pin_report(view: ClusterView) -> tuple[list[Json], list[Json]]:
    """(unsatisfied pins, lock conflicts) over the live, non-leaving nodes."""
    resolved = resolve_locks(view.locks, view.now)
    deciding = _deciding_locks(view.locks, view.now)
    names = eligible_names(view)
    unsatisfied: list[Json] = []
    for token, patterns in sorted(resolved.pins.items()):
        if not any(match_pattern(p, name) for p in patterns for name in names):
            lock = deciding[token]
            unsatisfied.append(
                {
                    "token": token,
                    "task_id": lock.task_key,
                    "patterns": list(patterns),
                    "owner": view.tokens.owner[token],
                }
            )
    conflicts: list[Json] = [
        {"token": c.token, "winner": c.winner, "losers": list(c.losers)} for c in resolved.conflicts
    ]
    return unsatisfied, conflicts


def history_rows(records: Iterable[HistoryRecord], now: float) -> list[Json]:
    return [
        {
            "generation": r.generation,
            "at": r.at,
            "age_sec": round(now - r.at, 3),
            "leader": r.leader,
            "trigger": r.entry.trigger,
            "moved": r.entry.moved,
            "unowned": r.entry.unowned,
            "nodes_before": list(r.entry.nodes_before),
            "nodes_after": list(r.entry.nodes_after),
            "duration_ms": round(r.entry.duration_ms, 3),
            "hot": None if r.entry.hot is None else list(r.entry.hot),
        }
        for r in records
    ]


def hot_tokens(records: Iterable[HistoryRecord]) -> list[int]:
    """The tokens the leader measured hot, heaviest first, as of the latest plan that
    moved tokens: the newest history entry that records them (every such plan of a
    leader balancing measured load does)."""
    for r in records:  # newest first
        if r.entry.hot is not None:
            return list(r.entry.hot)
    return []


def status_report(view: ClusterView, history: Sequence[HistoryRecord]) -> Json:
    """Everything ``jobsync status`` shows, JSON-ready."""
    now, site, tokens = view.now, view.site, view.tokens
    nodes = node_rows(view)
    live = {str(n["name"]) for n in nodes if n["state"] in ("live", "leaving")}
    loads = [int(str(n["tokens"])) for n in nodes if n["state"] == "live"]
    unowned = [t for t, o in enumerate(tokens.owner) if o is None]
    stranded = [t for t, o in enumerate(tokens.owner) if o is not None and o not in live]
    unsatisfied, conflicts = pin_report(view)
    leader = leader_of(view.nodes, now)
    report: Json = {
        "site": site.site,
        "now": now,
        "total_tokens": site.total_tokens,
        "hash_function": site.hash_function,
        "generation": site.generation,
        "change_counter": site.change_counter,
        "plan_basis": site.plan_basis,
        "leader": leader.name if leader else None,
        "nodes": nodes,
        "balance": {
            "min": min(loads) if loads else None,
            "max": max(loads) if loads else None,
            "spread": max(loads) - min(loads) if loads else None,
        },
        "unowned_tokens": unowned,
        "stranded_tokens": stranded,
        "pending_releases": sum(1 for t in range(len(tokens)) if tokens.is_pending(t)),
        "unsatisfied_pins": unsatisfied,
        "lock_conflicts": conflicts,
        "locks": len(view.locks),
        "recent_rebalances": history_rows(history, now),
        "hot_tokens": hot_tokens(history),
    }
    report["problems"] = problems(report)
    return report


def problems(report: Json) -> list[str]:
    """What an operator should look at, in words (empty when all is well)."""
    found: list[str] = []
    if report["leader"] is None:
        found.append("no live node: no leader, nobody can claim")
    for key, words in (
        ("unowned_tokens", "token(s) unowned"),
        ("stranded_tokens", "token(s) still held by nodes that are not live"),
        ("unsatisfied_pins", "pin(s) match no live node"),
        ("lock_conflicts", "token(s) with conflicting locks"),
    ):
        value = report[key]
        if isinstance(value, list) and value:
            found.append(f"{len(value)} {words}")
    return found


def token_rows(view: ClusterView, node: str | None = None) -> list[Json]:
    tokens = view.tokens
    return [
        {
            "token": t,
            "owner": tokens.owner[t],
            "incarnation": tokens.incarnation[t],
            "epoch": tokens.epoch[t],
            "pending_to": tokens.pending_to[t] if tokens.is_pending(t) else None,
            "pending": tokens.is_pending(t),
        }
        for t in range(len(tokens))
        if node is None or tokens.owner[t] == node
    ]


def which_report(view: ClusterView, task_id: str) -> Json:
    """The token of ``task_id`` under the site's constants, its owner and its pin."""
    site, tokens = view.site, view.tokens
    key = canonical(task_id)
    token = token_function(site.total_tokens, site.hash_function)(key)
    owner = tokens.owner[token]
    rows = {n.name: n for n in view.nodes}
    owner_state = node_state(rows[owner], view.now) if owner in rows else None
    lock = _deciding_locks(view.locks, view.now).get(token)
    return {
        "site": site.site,
        "task_id": key,
        "token": token,
        "hash_function": site.hash_function,
        "total_tokens": site.total_tokens,
        "owner": owner,
        "owner_state": owner_state if owner is not None else None,
        "incarnation": tokens.incarnation[token],
        "epoch": tokens.epoch[token],
        "pending_to": tokens.pending_to[token] if tokens.is_pending(token) else None,
        "pending": tokens.is_pending(token),
        "pinned_by": None if lock is None else lock.task_key,
        "pin_patterns": None if lock is None else list(lock.patterns),
    }


def ranges(ids: Iterable[int]) -> str:
    """``0-3,7,9-10`` for [0, 1, 2, 3, 7, 9, 10]."""
    out: list[str] = []
    run: list[int] = []
    for i in sorted(ids):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            out.append(_run(run))
        run = [i]
    if run:
        out.append(_run(run))
    return ",".join(out)


def _run(run: list[int]) -> str:
    return str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}"
