"""What the leader writes: a cluster snapshot in, a PlanCommit and a schedule out.

Law (docs/PROTOCOL.md section 4, the hand-off protocol): a token moves *directly* only from an
incarnation whose lease has expired (judged here on the snapshot's clock and
again by the backend at commit, on the statement clock); any live holder,
draining or ineligible ones included, goes through revoke and acknowledge.
A pending release is never cleared or re-attributed here: a later plan may
only change its destination (to the releaser itself when the plan keeps the
token where it is).  A holder that is neither live nor expired (evicted but
still within its lease, or an older incarnation still inside its fence) is
left alone and the leader is told when to look again.  Who leads and what a
holder is come from ``jobsync.core.rules`` (``oldest_live``, ``holding``), the
same functions the backends judge by at commit.

The planner's inputs from the node rows: each live active node's capacity
(its share is proportional to it), and an operator's drain: a drained node
stays live (it may lead) but is planned zero tokens, through the same fenced
revoke and acknowledge as any move, until it is undrained or its drain runs
out (the leader wakes then).  A plan that moves tokens off a drained node
names the drain (who and why) in its history entry.  With ``minimum_nodes``
above 1 nothing is planned while the site is forming
(``jobsync.core.plan_inputs.forming``): fewer eligible nodes than that and
no live node holding a token.

Pure apart from the planner call: no I/O, no clock.  The node decides when to
call it and sends what it returns.
"""

from __future__ import annotations

import attrs

from jobsync.backends.base import ClusterView, DirectAssign, HistoryEntry, PlanCommit, Revoke
from jobsync.core import plan_inputs, rules
from jobsync.core.loadbalance import LoadPlan, balance_load
from jobsync.core.locks import LockConflict, resolve_locks
from jobsync.core.model import NODE_ACTIVE, NodeRecord, TokenTable
from jobsync.core.planner import Plan, plan
from jobsync.runtime.loadtrack import LoadInputs


@attrs.frozen(kw_only=True)
class Decision:
    """The leader's answer for one snapshot."""

    is_leader: bool
    commit: PlanCommit | None = None
    evict: bool = False
    next_check: float | None = None
    """Backend time at which the leader should look again (deadlines, fences, expiries)."""
    plan: Plan | None = None
    conflicts: tuple[LockConflict, ...] = ()
    load_plan: LoadPlan | None = None
    """The load plan behind ``plan`` when measured load was balanced."""
    forming: bool = False
    """Nothing planned: fewer eligible nodes than ``minimum_nodes`` and no live node
    holds a token (``jobsync.core.plan_inputs.forming``)."""


def decide(
    view: ClusterView,
    name: str,
    incarnation: int,
    ack_timeout: float,
    trigger: str,
    *,
    load: LoadInputs | None = None,
    minimum_nodes: int = 1,
) -> Decision:
    """Plan from ``view`` if (name, incarnation) is the oldest live node.

    While the site is forming (fewer than ``minimum_nodes`` eligible nodes and
    no live node holding a token) the leader writes nothing and looks again when a
    node joins (a change wakes it) or a drain ends.

    With ``load`` (measured per-token load, ``runtime/loadtrack.py``) the plan
    is ``jobsync.core.loadbalance.balance_load``'s from the current table:
    orphans and joins at once, load moves within ``load.load_moves``.  It plans
    from where each token is heading (a pending release's destination, while
    that node is eligible), so a move in flight is kept, not planned again."""
    now = view.now
    leader = rules.oldest_live(view.nodes, now)
    if leader is None or leader.name != name or leader.incarnation != incarnation:
        return Decision(is_leader=False)
    live = [n for n in view.nodes if rules.is_live(n, now) and n.state == NODE_ACTIVE]
    drained = [n for n in live if n.is_drained(now)]
    eligible = [n for n in live if not n.is_drained(now)]
    current = {n.name: n.incarnation for n in eligible}
    capacities = {n.name: n.capacity for n in eligible}
    tokens = view.tokens
    running = {n.name: n.incarnation for n in view.nodes if rules.is_live(n, now)}
    if plan_inputs.forming(minimum_nodes, current, running, tokens.owner, tokens.incarnation):
        wake = None
        for row in drained:
            wake = _earliest(wake, row.drain_until)
        return Decision(is_leader=True, next_check=wake, forming=True)
    resolved = resolve_locks(view.locks, now)
    load_plan = None
    if load is not None and current:
        load_plan = balance_load(
            _heading(tokens, current),
            load.rates,
            capacities,
            locks=resolved.pins,
            cooling=load.cooling,
            policy=load.policy,
            load_moves=load.load_moves,
            known=load.known,
        )
        result = _as_plan(load_plan)
    else:
        result = plan(
            view.site.total_tokens, view.tokens.owner, sorted(current), resolved.pins, capacities
        )
    assigns, revokes, wake, overdue = _writes(view, result, current)
    for lock in view.locks:
        if lock.expires_at is not None:
            wake = _earliest(wake, lock.expires_at)
    for row in drained:
        wake = _earliest(wake, row.drain_until)
    site = view.site
    commit: PlanCommit | None = None
    if assigns or revokes or site.plan_basis < site.change_counter:
        history = None
        if assigns or revokes:
            before = sorted({o for o in view.tokens.owner if o is not None})
            history = HistoryEntry(
                trigger=trigger + _drain_notes(drained, view.tokens.owner),
                nodes_before=tuple(before),
                nodes_after=tuple(sorted(current)),
                moved=result.moved,
                unowned=len(result.unowned),
                duration_ms=0.0,  # the node fills in what it measured
                hot=_hot(load, load_plan),
            )
        commit = PlanCommit(
            leader=name,
            leader_incarnation=incarnation,
            expected_generation=site.generation,
            basis=site.change_counter,
            assigns=tuple(assigns),
            revokes=tuple(revokes),
            ack_timeout=ack_timeout,
            history=history,
        )
    return Decision(
        is_leader=True,
        commit=commit,
        evict=overdue,
        next_check=wake,
        plan=result,
        conflicts=resolved.conflicts,
        load_plan=load_plan,
    )


def _as_plan(result: LoadPlan) -> Plan:
    """A load plan in the count planner's shape (what ``_writes`` and the history read)."""
    return Plan(
        total_tokens=len(result.assignment),
        nodes=result.nodes,
        assignment=result.assignment,
        moves=result.moves,
        unowned=result.unowned,
        loads=result.counts,
        lower_bound=result.forced + result.filled + result.lower_bound,
    )


def _hot(load: LoadInputs | None, result: LoadPlan | None) -> tuple[int, ...] | None:
    """The hot tokens a history entry records, heaviest first (None: load is not
    balanced): this load pass's, or between load passes the last one's."""
    if load is None or result is None:
        return None
    return result.hot if load.load_moves else load.hot


def _heading(tokens: TokenTable, current: dict[str, int]) -> tuple[str | None, ...]:
    """Each token's owner, or the destination of its pending release if that is eligible."""
    return tuple(
        to if deadline is not None and to in current else owner
        for owner, to, deadline in zip(
            tokens.owner, tokens.pending_to, tokens.pending_deadline, strict=True
        )
    )


def _drain_notes(drained: list[NodeRecord], owners: tuple[str | None, ...]) -> str:
    """``; drain NAME (NOTE)`` for each drained node that still holds tokens."""
    holding = set(owners)
    notes = [
        f"; drain {row.name}" + (f" ({row.drain_note})" if row.drain_note else "")
        for row in drained
        if row.name in holding
    ]
    return "".join(notes)


def _earliest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _writes(
    view: ClusterView, result: Plan, current: dict[str, int]
) -> tuple[list[DirectAssign], list[Revoke], float | None, bool]:
    tokens = view.tokens
    rows = {n.name: n for n in view.nodes}
    assigns: list[DirectAssign] = []
    revokes: list[Revoke] = []
    wake: float | None = None
    overdue = False
    target_of = result.assignment
    for token in range(len(tokens)):
        owner, inc, epoch = tokens.owner[token], tokens.incarnation[token], tokens.epoch[token]
        deadline = tokens.pending_deadline[token]
        target = target_of[token]
        row = rows.get(owner) if owner is not None else None
        kind, until = rules.holding(row, inc, view.now)
        if kind is rules.Hold.WAITING:
            wake = _earliest(wake, until)
            continue
        if kind is rules.Hold.LIVE:
            assert inc is not None
            if deadline is not None:
                wake = _earliest(wake, deadline)
                overdue = overdue or deadline <= view.now
                if tokens.pending_to[token] != target:
                    revokes.append(_revoke(token, inc, epoch, target))
            elif owner != target:
                revokes.append(_revoke(token, inc, epoch, target))
            continue
        target_inc = current.get(target) if target is not None else None
        if kind is rules.Hold.NONE and target is None:
            continue
        assigns.append(
            DirectAssign(
                token=token,
                expected_incarnation=inc,
                expected_epoch=epoch,
                owner=target,
                incarnation=target_inc,
            )
        )
    return assigns, revokes, wake, overdue


def _revoke(token: int, inc: int, epoch: int, target: str | None) -> Revoke:
    return Revoke(token=token, expected_incarnation=inc, expected_epoch=epoch, destination=target)
