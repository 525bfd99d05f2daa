"""The state of one site in a MemoryStore, and what each verb does to it.

Nothing here locks, sleeps or reads a clock: the store calls these methods
under its one lock with the clock read once per verb (``now``), so each verb
is one atomic transaction judged at one statement-clock instant.  Arguments
that need no site were checked by the caller; arguments that need the site's
``total_tokens`` are checked here, before anything is written.

Every protocol judgement is made by ``jobsync.core.rules`` (the same rules the
other backends' statements are checked against); this module keeps the rows
and applies what the rules decide.  Two judgements of an incarnation, on
``now``:

- *live* (leadership, a release's destination, ``mark_leaving``): its row is
  current, active or leaving, and ``last_heartbeat + lease_timeout > now``
  (``NodeRecord.is_live``).
- *gone*, base.py's "lease expired" (its tokens may be handed on without its
  acknowledgement, its open claims released): the row holds it dead (a
  heartbeat found it expired, a reaper buried it, or it deregistered and
  left a tombstone: dead is final), or the row holds it and
  ``lease_expires <= now`` whatever the state (an *evicted* incarnation keeps
  its tokens until then: it may still be within its own lease); or the row
  holds a newer incarnation and ``fence_until <= now``; or there is no row for
  its name.  A row that fences an older incarnation outlives its own
  deregistration as a dead tombstone (base.py, ``deregister``), so "no row"
  never hides a fence.

``SiteState`` is built over ``_SiteCore`` (rows, counters, shared judgements)
and ``_RecordVerbs`` (claims, reaping, locks, history); it adds sites,
membership, planning and hand-off.

Token rows are flat parallel lists (epochs in an ``array``) with three indexes
kept in step by ``TokenRows``: tokens per incarnation, tokens per owner name,
and the set of tokens with a release pending.
"""

from __future__ import annotations

import datetime
from array import array
from collections.abc import Sequence
from typing import TypeVar

import attrs

from jobsync.backends import _checks as checks
from jobsync.backends.memory.records import ClaimLedger, ClaimRow, LockTable
from jobsync.core import model as M
from jobsync.core import rules
from jobsync.core.defences import PRODUCTION, Defences
from jobsync.core.errors import (
    ConfigMismatch,
    ConflictError,
    InvalidArgument,
    NotLeader,
)
from jobsync.core.hashing import token_for

_RUNNING = (M.NODE_ACTIVE, M.NODE_LEAVING)
_K = TypeVar("_K")


class TokenRows:
    """Every token row of a site as parallel lists, plus the indexes the verbs need."""

    def __init__(self, total: int, epoch: int) -> None:
        self.owner: list[str | None] = [None] * total
        self.incarnation: list[int | None] = [None] * total
        self.epoch = array("q", [epoch]) * total
        self.pending_to: list[str | None] = [None] * total
        self.deadline: list[float | None] = [None] * total
        self.pending: set[int] = set()
        self._held: dict[int, set[int]] = {}
        self._named: dict[str, set[int]] = {}

    def __len__(self) -> int:
        return len(self.owner)

    def give(self, token: int, owner: str | None, incarnation: int | None) -> None:
        """A new owning incarnation (or none): epoch bumped, any release cleared."""
        old_owner, old_incarnation = self.owner[token], self.incarnation[token]
        if old_incarnation is not None:
            _discard(self._held, old_incarnation, token)
        if old_owner is not None:
            _discard(self._named, old_owner, token)
        self.owner[token], self.incarnation[token] = owner, incarnation
        if owner is not None and incarnation is not None:
            self._held.setdefault(incarnation, set()).add(token)
            self._named.setdefault(owner, set()).add(token)
        self.epoch[token] += 1
        self.pending.discard(token)
        self.pending_to[token] = self.deadline[token] = None

    def request_release(self, token: int, destination: str | None, deadline: float) -> None:
        """Record a release, or only change the destination of the pending one."""
        self.pending_to[token] = destination
        if token not in self.pending:
            self.pending.add(token)
            self.deadline[token] = deadline

    def held_by(self, incarnation: int) -> list[int]:
        return sorted(self._held.get(incarnation, ()))

    def held_under(self, name: str) -> set[int]:
        return self._named.get(name, set())

    def holds(self, token: int, incarnation: int | None, epoch: int) -> bool:
        return self.incarnation[token] == incarnation and self.epoch[token] == epoch

    def table(self) -> M.TokenTable:
        return M.TokenTable(
            owner=tuple(self.owner),
            incarnation=tuple(self.incarnation),
            epoch=array("q", self.epoch),
            pending_to=tuple(self.pending_to),
            pending_deadline=tuple(self.deadline),
        )


def _discard(index: dict[_K, set[int]], key: _K, token: int) -> None:
    tokens = index.get(key)
    if tokens is not None:
        tokens.discard(token)
        if not tokens:
            del index[key]


class _SiteCore:
    """A site's rows and counters, and the judgements every verb shares."""

    def __init__(
        self,
        name: str,
        total: int,
        hash_function: str,
        now: float,
        defences: Defences = PRODUCTION,
    ) -> None:
        self.name = name
        self.defences = defences
        self.hash_function = hash_function
        self.created_at = now
        self.generation = self.change_counter = self.plan_basis = 0
        self.signals = 0
        """Counter bumps plus plan-basis updates: what ``wait_for_change`` waits on."""
        self.next_incarnation = 1
        self.nodes: dict[str, M.NodeRecord] = {}
        self.tokens = TokenRows(total, 0)
        self.claims = ClaimLedger()
        self.locks = LockTable()
        self.history: list[M.HistoryRecord] = []

    # -- counters and judgements -------------------------------------------
    def bump(self) -> None:
        self.change_counter += 1
        self.signals += 1

    def info(self) -> M.SiteInfo:
        return M.SiteInfo(
            site=self.name,
            total_tokens=len(self.tokens),
            hash_function=self.hash_function,
            generation=self.generation,
            change_counter=self.change_counter,
            plan_basis=self.plan_basis,
            created_at=self.created_at,
        )

    def sorted_nodes(self) -> tuple[M.NodeRecord, ...]:
        return tuple(sorted(self.nodes.values(), key=lambda r: (r.registered_at, r.name)))

    def leader(self, now: float) -> M.NodeRecord | None:
        return rules.oldest_live(self.nodes.values(), now)

    def gone(self, name: str | None, incarnation: int, now: float) -> bool:
        row = self.nodes.get(name) if name is not None else None
        return rules.lease_expired(row, incarnation, now)

    def _check_leader(self, name: str, incarnation: int, now: float) -> None:
        leader = self.leader(now)
        if leader is None or (leader.name, leader.incarnation) != (name, incarnation):
            oldest = "no live node" if leader is None else f"{leader.name!r} ({leader.incarnation})"
            raise NotLeader(
                f"{name!r} incarnation {incarnation} is not the oldest live node of site "
                f"{self.name!r}; the leader is {oldest}"
            )

    def _mark_dead(self, name: str | None, incarnation: int) -> None:
        row = self.nodes.get(name) if name is not None else None
        if row is not None and row.incarnation == incarnation and row.state in _RUNNING:
            self.nodes[row.name] = attrs.evolve(row, state=M.NODE_DEAD)

    def _bury(self, name: str | None, incarnation: int) -> None:
        """A gone incarnation: mark its row dead and release its open claims."""
        self._mark_dead(name, incarnation)
        self.claims.release_all(incarnation)


class _RecordVerbs(_SiteCore):
    """Claims, reaping, locks and history."""

    # -- claims ---------------------------------------------------------------
    def claim(
        self,
        date: datetime.date,
        name: str,
        incarnation: int,
        requests: Sequence[M.ClaimRequest],
        now: float,
    ) -> frozenset[str]:
        rows, claimed = self.tokens, set()
        for request in checks.claim_requests(requests, len(self.tokens)):
            key, token = (date, request.task_key), request.token
            fenced = rows.owner[token] == name and rows.holds(token, incarnation, request.epoch)
            if not fenced or token in rows.pending:
                continue
            if not self.claims.exists(key):
                self.claims.add(key, ClaimRow(name, incarnation, token, request.epoch, now))
                claimed.add(request.task_key)
            elif self.claims.open_by(key, incarnation):
                claimed.add(request.task_key)  # a retry whose first answer was lost
        return frozenset(claimed)

    def reap(self, now: float) -> M.Reaped:
        """Release ended incarnations' claims; those a transaction locks are skipped."""
        claimers = self.claims.open_incarnations()
        gone = [(name, inc) for name, inc in claimers if self.gone(name, inc, now)]
        for name, inc in gone:
            self._mark_dead(name, inc)
        released = sum(self.claims.release_all(inc) for _, inc in gone)
        skipped = len(self.claims.open_keys_of(inc for _, inc in gone))
        self._purge_nodes(now)
        return M.Reaped(released=released, skipped=skipped)

    def claimer_names(self) -> list[str]:
        """Names of the nodes with an open claim, sorted."""
        return sorted({name for name, _ in self.claims.open_incarnations()})

    def _purge_nodes(self, now: float) -> None:
        """Delete dead rows kept past ``DEAD_NODE_RETENTION`` that nothing needs."""
        for row in list(self.nodes.values()):
            if rules.purgeable(row, now, named_by_tokens=bool(self.tokens.held_under(row.name))):
                del self.nodes[row.name]

    # -- locks and history ----------------------------------------------------
    def replace_locks(
        self, creator: str, locks: Sequence[M.LockSpec], clear: bool, now: float
    ) -> int:
        specs = checks.lock_specs(locks, len(self.tokens))
        if self.locks.replace(creator, specs, clear, now):
            self.bump()
        return len(specs)

    def clear_locks(self, creator: str | None, now: float) -> int:
        deleted = self.locks.clear(creator, now)
        if deleted:
            self.bump()
        return deleted

    def list_locks(self, now: float) -> tuple[M.LockRecord, ...]:
        return self.locks.visible(now)

    def read_history(self, limit: int) -> tuple[M.HistoryRecord, ...]:
        return tuple(reversed(self.history[-limit:]))

    def prune(self, older_than: float, now: float) -> dict[str, int]:
        cutoff = now - older_than
        kept = [record for record in self.history if record.at >= cutoff]
        pruned = {"audit": self.claims.prune(cutoff), "history": len(self.history) - len(kept)}
        self.history = kept
        return pruned


class SiteState(_RecordVerbs):
    """One site: constants, counters, node rows, token rows, claims, locks, history."""

    # -- sites ----------------------------------------------------------------
    def check_constants(self, total: int, hash_function: str) -> None:
        if (total, hash_function) != (len(self.tokens), self.hash_function):
            raise ConfigMismatch(
                f"site {self.name!r} stores total_tokens={len(self.tokens)}, "
                f"hash_function={self.hash_function!r}; got total_tokens={total}, "
                f"hash_function={hash_function!r}"
            )

    def reset(self, total: int, hash_function: str, now: float) -> M.SiteInfo:
        busy = sorted(
            r.name
            for r in self.nodes.values()
            if r.fence_until > now or not self.gone(r.name, r.incarnation, now)
        )
        if busy:
            raise ConflictError(
                f"site {self.name!r} has nodes within their lease {busy}; reset refused"
            )
        floor = max(self.tokens.epoch, default=0) + 1
        self.tokens = TokenRows(total, floor)
        self.hash_function = hash_function
        self.claims.clear_open()
        self.locks.retoken(lambda key: token_for(key, total, hash_function))
        self.generation += 1
        self.bump()
        return self.info()

    # -- membership -----------------------------------------------------------
    def register(self, joining: M.Joining, now: float) -> M.Registration:
        row = rules.takeover(self.nodes.get(joining.name), joining, self.next_incarnation, now)
        self.next_incarnation += 1
        self.nodes[joining.name] = row
        self.bump()
        return M.Registration(
            incarnation=row.incarnation,
            registered_at=now,
            change_counter=self.change_counter,
            fence_until=row.fence_until,
        )

    def heartbeat(
        self, name: str, incarnation: int, now: float, watch: str | None, leading: bool
    ) -> M.Heartbeat:
        """The name's row and the watched one by key; every row only when ``leading``."""
        outcome, row = rules.heartbeat(self.nodes.get(name), incarnation, now)
        if row is not None:
            self.nodes[name] = row
        watched = None if watch in (None, name) else self.nodes.get(watch)
        expiries = (
            [
                r.lease_expires
                for r in self.nodes.values()
                if r.name != name and rules.is_live(r, now)
            ]
            if leading
            else None
        )
        return M.Heartbeat(
            outcome=outcome,
            now=now,
            change_counter=self.change_counter,
            plan_basis=self.plan_basis,
            earliest_other_expiry=None if expiries is None else min(expiries, default=None),
            live_others=None if expiries is None else len(expiries),
            watched_expiry=(
                watched.lease_expires
                if watched is not None and rules.is_live(watched, now)
                else None
            ),
        )

    def mark_leaving(self, name: str, incarnation: int, now: float) -> bool:
        row = self.nodes.get(name)
        if row is None or row.incarnation != incarnation or not row.is_live(now):
            return False
        if row.state != M.NODE_LEAVING:
            self.nodes[name] = attrs.evolve(row, state=M.NODE_LEAVING)
            self.bump()
        return True

    def deregister(self, name: str, incarnation: int, now: float) -> bool:
        row = self.nodes.get(name)
        if row is None or row.incarnation != incarnation:
            return False
        changed = self.claims.release_all(incarnation) > 0
        for token in self.tokens.held_by(incarnation):
            self.tokens.give(token, None, None)
            changed = True
        left = bool(self.claims.open_keys_of([incarnation]))
        keeps = self.defences.deregister_keeps_fence
        if rules.leaves_tombstone(row, now, claims_left=left, keeps_fence=keeps):
            # A dead tombstone keeps the fence, and keeps claims a transaction held
            # (skipped above) in sight of the leader, whose reap releases them.
            if row.state != M.NODE_DEAD:
                self.nodes[name] = attrs.evolve(row, state=M.NODE_DEAD)
                changed = True
        else:
            del self.nodes[name]
            changed = True
        if changed:  # a repeat (its first answer lost) finds nothing left to do
            self.bump()
        return changed

    # -- planning -------------------------------------------------------------
    def read_cluster(self, now: float) -> M.ClusterView:
        return M.ClusterView(
            now=now,
            site=self.info(),
            nodes=self.sorted_nodes(),
            tokens=self.tokens.table(),
            locks=self.locks.visible(now),
        )

    def commit(self, plan: M.PlanCommit, now: float) -> int:
        checks.plan_tokens(plan, len(self.tokens))
        if plan.basis > self.change_counter:
            raise InvalidArgument(
                f"plan basis {plan.basis} is above site {self.name!r}'s change counter "
                f"{self.change_counter}"
            )
        rules.plan_misfit(
            plan,
            site=self.name,
            generation=self.generation,
            tokens=self.tokens,
            nodes=self.nodes,
            now=now,
            expiry_recheck=self.defences.expiry_recheck,
        )
        if not (plan.assigns or plan.revokes):
            self.plan_basis = max(self.plan_basis, plan.basis)
            self.signals += 1
            return self.generation
        rows = self.tokens
        for assign in plan.assigns:
            if assign.expected_incarnation is not None:
                self._bury(rows.owner[assign.token], assign.expected_incarnation)
            rows.give(assign.token, assign.owner, assign.incarnation)
        for revoke in plan.revokes:
            rows.request_release(revoke.token, revoke.destination, now + plan.ack_timeout)
        self.generation += 1
        self.plan_basis = max(self.plan_basis, plan.basis)
        self.bump()
        if plan.history is not None:
            self.history.append(
                M.HistoryRecord(
                    generation=self.generation, leader=plan.leader, at=now, entry=plan.history
                )
            )
        return self.generation

    def read_owned(self, name: str, incarnation: int, now: float) -> M.OwnedTokens:
        rows = self.tokens
        held = [t for t in rows.held_by(incarnation) if rows.owner[t] == name]
        incoming = {t for t in rows.pending if rows.pending_to[t] == name}
        incoming.update(t for t in rows.held_under(name) if rows.incarnation[t] != incarnation)
        return M.OwnedTokens(
            now=now,
            change_counter=self.change_counter,
            plan_basis=self.plan_basis,
            tokens=tuple(held),
            epochs=tuple(rows.epoch[t] for t in held),
            pending=frozenset(t for t in held if t in rows.pending),
            incoming=len(incoming),
        )

    # -- hand-off -------------------------------------------------------------
    def _hand_over(self, token: int, now: float) -> None:
        """Finish the pending release of ``token``: to its destination's live incarnation."""
        destination = self.tokens.pending_to[token]
        row = self.nodes.get(destination) if destination is not None else None
        to = rules.destination(row, now)
        self.tokens.give(token, *(to or (None, None)))

    def ack(
        self, name: str, incarnation: int, pairs: Sequence[tuple[int, int]], now: float
    ) -> frozenset[int]:
        rows, done = self.tokens, set()
        for token, epoch in pairs:
            if (
                token in rows.pending
                and rows.owner[token] == name
                and rows.holds(token, incarnation, epoch)
            ):
                self._hand_over(token, now)
                done.add(token)
        if done:
            self.bump()
        return frozenset(done)

    def evict(self, leader: str, leader_incarnation: int, now: float) -> tuple[str, ...]:
        self._check_leader(leader, leader_incarnation, now)
        rows, evicted = self.tokens, set()
        for token in rows.pending:
            deadline, owner = rows.deadline[token], rows.owner[token]
            row = self.nodes.get(owner) if owner is not None else None
            overdue = rules.overdue(deadline, now)
            holder = row is not None and row.incarnation == rows.incarnation[token]
            if overdue and holder and row is not None and row.state in _RUNNING:
                self.nodes[row.name] = attrs.evolve(row, state=M.NODE_EVICTED)
                evicted.add(row.name)
        if evicted:
            self.bump()
        return tuple(sorted(evicted))
