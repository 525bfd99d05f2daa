"""What ``jobsync explain`` and ``jobsync plan`` report: pure functions of what was read.

``explain``: for each task, its token and owner (``report.which_report``),
the pin rule that decided its eligible workers, and its claim of the date.
A lock's patterns are tried in order and the first one that matches a node
the leader plans over (live and not leaving) decides; a later pattern
deciding is a fallback; none matching leaves the token unowned (the
planner's rule, ``jobsync.core.planner.plan``; which lock decides a token is
``jobsync.core.locks.resolve_locks``).

``plan`` (what-if): the leader's own computation (``leader.decide`` plans
with ``jobsync.core.planner.plan`` over the live, active nodes and the
resolved pins) run on a changed copy of the read state: nodes added or
removed, capacities changed, locks added.  Nothing is written.  The moves it reports are the
planner's: per worker what it would gain and give up, the tokens left
unowned, and the pins no planned worker matches.
"""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import attrs

from jobsync.backends.base import AuditRecord, ClusterView, LockRecord
from jobsync.cli.report import Json, eligible_names, which_report
from jobsync.core import rules
from jobsync.core.capacity import DEFAULT_CAPACITY, validate_capacity
from jobsync.core.errors import InvalidArgument
from jobsync.core.hashing import canonical, token_function
from jobsync.core.locks import resolve_locks
from jobsync.core.patterns import match_pattern, validate_node_name, validate_pattern
from jobsync.core.planner import plan

WHAT_IF_CREATOR = "what-if"


def pin_decision(patterns: Sequence[str], names: Iterable[str]) -> tuple[int | None, list[str]]:
    """(index of the deciding pattern, the names it matches); (None, []) if none matches."""
    candidates = sorted(names)
    for i, pattern in enumerate(patterns):
        matched = [n for n in candidates if match_pattern(pattern, n)]
        if matched:
            return i, matched
    return None, []


def pin_rule(token: int, locks: Sequence[LockRecord], names: Sequence[str], now: float) -> Json:
    """How the eligible workers of ``token`` are decided over ``names``."""
    resolved = resolve_locks(locks, now)
    patterns = resolved.pins.get(token)
    if patterns is None:
        return {
            "lock": None,
            "eligible": sorted(names),
            "rule": f"no lock: every live worker is eligible ({len(names)})",
        }
    lock = min(
        (lk for lk in locks if lk.token == token and tuple(lk.patterns) == patterns),
        key=lambda lk: (lk.created_at, lk.task_key),
    )
    index, matched = pin_decision(patterns, names)
    losers = [c.losers for c in resolved.conflicts if c.token == token]
    if index is None:
        rule = f"no pattern of {list(patterns)} matches a live worker: the token stays unowned"
    else:
        eligible = f"{len(matched)} eligible ({', '.join(matched)})"
        if index:
            missed = ", ".join(repr(p) for p in patterns[:index])
            verb = "matches" if index == 1 else "match"
            rule = f"{missed} {verb} no live worker, so the fallback {patterns[index]!r} decides: "
        else:
            rule = f"{patterns[0]!r} decides (first choice): "
        rule += eligible
    return {
        "lock": lock.task_key,
        "created_by": lock.created_by,
        "reason": lock.reason,
        "patterns": list(patterns),
        "matched_pattern": None if index is None else patterns[index],
        "pattern_index": index,
        "fallback": bool(index),
        "eligible": matched,
        "overrides": list(losers[0]) if losers else [],
        "rule": rule,
    }


def claim_state(view: ClusterView, record: AuditRecord | None) -> Json:
    """A task's claim of the date: done, claimed (by a live or an ended incarnation), or none."""
    if record is None:
        return {"status": "unclaimed", "text": "not claimed (never, or released)"}
    base: Json = {
        "status": record.status,
        "node": record.node,
        "incarnation": record.incarnation,
        "epoch": record.epoch,
        "claimed_at": record.claimed_at,
        "completed_at": record.completed_at,
    }
    who = f"{record.node} (incarnation {record.incarnation})"
    if record.status == "done":
        return dict(base, text=f"done by {who}")
    row = next((n for n in view.nodes if n.name == record.node), None)
    ended = rules.lease_expired(row, record.incarnation, view.now)
    if ended:
        text = f"claimed by {who}, whose lease has ended: the leader releases it"
    else:
        text = f"claimed by {who}, in progress"
    return dict(base, claimer_lease="ended" if ended else "running", text=text)


def explain_report(
    view: ClusterView,
    audit: Iterable[AuditRecord],
    date: datetime.date,
    task_ids: Sequence[str],
) -> list[Json]:
    """One entry per task id (see the module docstring)."""
    by_key = {r.task_key: r for r in audit}
    names = eligible_names(view)
    out: list[Json] = []
    for task_id in task_ids:
        entry = which_report(view, task_id)
        token = int(str(entry["token"]))
        entry["pin"] = pin_rule(token, view.locks, names, view.now)
        entry["date"] = date.isoformat()
        entry["claim"] = claim_state(view, by_key.get(canonical(task_id)))
        out.append(entry)
    return out


# -- what-if --------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class WhatIf:
    """The changes to try: nodes to add or remove, locks to add (task id -> patterns)."""

    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    pins: tuple[tuple[str, tuple[str, ...]], ...] = ()
    capacities: tuple[tuple[str, float], ...] = ()


def parse_pin(text: str) -> tuple[str, tuple[str, ...]]:
    """``TASK=PATTERN[,PATTERN...]`` (the last ``=`` separates) -> (task, patterns)."""
    task, sep, rest = text.rpartition("=")
    if not sep or not task or not rest:
        raise InvalidArgument(f"--pin {text!r}: expected TASK=PATTERN[,PATTERN...]")
    patterns = tuple(validate_pattern(p) for p in rest.split(","))
    if any(not p for p in patterns):
        raise InvalidArgument(f"--pin {text!r}: an empty pattern")
    return task, patterns


def parse_capacity(text: str) -> tuple[str, float]:
    """``NAME=C`` (the last ``=`` separates) -> (name, capacity), both validated."""
    name, sep, rest = text.rpartition("=")
    if not sep or not name:
        raise InvalidArgument(f"--capacity {text!r}: expected NAME=CAPACITY")
    try:
        value = float(rest)
    except ValueError:
        raise InvalidArgument(f"--capacity {text!r}: {rest!r} is not a number") from None
    return validate_node_name(name), validate_capacity(value, f"--capacity of {name!r}")


def _nodes_after(current: Sequence[str], change: WhatIf) -> list[str]:
    names = set(current)
    for name in change.remove:
        validate_node_name(name)
        if name not in names:
            raise InvalidArgument(
                f"--remove {name!r}: not a live worker the leader plans over "
                f"({', '.join(current) or 'none'})"
            )
        names.discard(name)
    for name in change.add:
        validate_node_name(name)
        if name in names:
            raise InvalidArgument(f"--add {name!r}: already a live worker")
        names.add(name)
    return sorted(names)


def _locks_after(
    view: ClusterView, pins: Sequence[tuple[str, tuple[str, ...]]]
) -> list[LockRecord]:
    """The read locks with the what-if pins upserted as ``locks add`` would (a lock on
    the same task keeps its creation time, so its seniority)."""
    locks = {lk.task_key: lk for lk in view.locks}
    token_of = token_function(view.site.total_tokens, view.site.hash_function)
    for task, patterns in pins:
        key = canonical(task)
        before = locks.get(key)
        locks[key] = LockRecord(
            task_key=key,
            token=token_of(key),
            patterns=patterns,
            reason="what-if",
            created_by=WHAT_IF_CREATOR,
            created_at=before.created_at if before is not None else view.now,
            expires_at=None,
        )
    return sorted(locks.values(), key=lambda lk: (lk.created_at, lk.task_key))


def plan_report(view: ClusterView, change: WhatIf) -> Json:
    """What the leader would do after ``change`` (nothing is written)."""
    total, owners, now = view.site.total_tokens, view.tokens.owner, view.now
    current = eligible_names(view)
    after = _nodes_after(current, change)
    locks = _locks_after(view, change.pins)
    resolved = resolve_locks(locks, now)
    stored = {n.name: n.capacity for n in view.nodes}
    capacities = dict(stored)
    for name, value in change.capacities:
        if name not in after:
            raise InvalidArgument(f"--capacity {name!r}: not a worker of the plan ({after})")
        capacities[name] = value
    result = plan(total, owners, after, resolved.pins, capacities)
    today = plan(total, owners, current, resolve_locks(view.locks, now).pins, stored)
    held = Counter(o for o in owners if o is not None)
    gains = Counter(new for _, _, new in result.moves if new is not None)
    losses = Counter(old for _, old, _ in result.moves if old is not None)
    workers: list[Json] = []
    for name in sorted(set(after) | set(held)):
        role = "added" if name in change.add else ("removed" if name in change.remove else "")
        if name not in after and not role:
            role = "not live"
        workers.append(
            {
                "name": name,
                "change": role,
                "capacity": capacities.get(name, DEFAULT_CAPACITY),
                "tokens_now": held.get(name, 0),
                "tokens_after": result.targets.get(name, 0),
                "gains": gains.get(name, 0),
                "gives_up": losses.get(name, 0),
            }
        )
    return {
        "site": view.site.site,
        "total_tokens": total,
        "generation": view.site.generation,
        "changes": {
            "add": list(change.add),
            "remove": list(change.remove),
            "pin": {task: list(p) for task, p in change.pins},
            "capacity": dict(change.capacities),
        },
        "nodes_now": current,
        "nodes_after": after,
        "moved": result.moved,
        "lower_bound": result.lower_bound,
        "moves_without_changes": today.moved,
        "workers": workers,
        "unowned_after": sorted(result.unowned),
        "unowned_now": [t for t, o in enumerate(owners) if o is None],
        "broken_pins": _broken_pins(resolved.pins, locks, after),
        "lock_conflicts": [
            {"token": c.token, "winner": c.winner, "losers": list(c.losers)}
            for c in resolved.conflicts
            if any(task in c.losers for task, _ in change.pins)
        ],
    }


def _broken_pins(
    pins: Mapping[int, tuple[str, ...]], locks: Sequence[LockRecord], names: Sequence[str]
) -> list[Json]:
    """Pins no planned worker matches, with the lock that decides each (locks are
    sorted oldest first, so the first with the deciding patterns is the winner)."""
    deciding: dict[int, str] = {}
    for lock in locks:
        if pins.get(lock.token) == tuple(lock.patterns):
            deciding.setdefault(lock.token, lock.task_key)
    return [
        {"token": token, "task_id": deciding[token], "patterns": list(pins[token])}
        for token in sorted(pins)
        if pin_decision(pins[token], names)[0] is None
    ]
