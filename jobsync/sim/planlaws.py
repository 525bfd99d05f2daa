"""The simulator's judgement of plans: invariants 2 (a token taken directly only
from an incarnation that no longer claims it), 4 (the plan the leader computed,
recomputed from what it read, carried out by the commit), 5 (pins) and 6 (an
epoch bump with every change of hands), on every accepted plan.  The laws are
stated at the top of ``invariants.py``; a leader balancing measured load is
judged by ``loadlaws`` instead of the recomputation."""

from __future__ import annotations

from array import array
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import attrs

from jobsync.backends.base import LockRecord, NodeRecord, PlanCommit
from jobsync.core import rules
from jobsync.core.capacity import weights
from jobsync.core.locks import resolve_locks
from jobsync.core.planner import lower_bound_moves, plan
from jobsync.sim.loadlaws import LoadLaws

if TYPE_CHECKING:
    from jobsync.sim.invariants import Checker


@attrs.define
class Commit:
    """A plan commit in flight: what it was computed from, and what it found."""

    client: str
    commit: PlanCommit
    owner: tuple[str | None, ...]
    incarnation: tuple[int | None, ...]
    nodes: dict[str, NodeRecord]
    pending_to: dict[int, str | None]
    epoch: array[int]
    locks: tuple[LockRecord, ...]
    db_now: float
    generation: int
    sent: bool = False
    suspicious: list[tuple[int, str]] = attrs.Factory(list)


class PlanLaws:
    """Plan commits in flight, and the judgement of each one accepted."""

    def __init__(self, checker: Checker) -> None:
        self.checker = checker
        self.c = checker.c
        self.total = checker.total
        self.commits: list[Commit] = []
        config = checker.c.config
        self.load_laws = None if config.load_half_life_sec is None else LoadLaws(checker)

    def fail(self, invariant: int, message: str) -> None:
        self.checker.fail(invariant, message)

    def settle_sent(self) -> None:
        """Judge every sent commit (accepted or not: ``_settle`` looks)."""
        if self.commits:
            waiting = []
            for entry in self.commits:
                if entry.sent:
                    self._settle(entry)
                else:
                    waiting.append(entry)
            self.commits = waiting

    def begins(self, client: str, commit: PlanCommit) -> None:
        if not (commit.assigns or commit.revokes):
            return
        # The plan is judged on what its leader read (a pause may fall between that
        # read and this commit; the commit's own checks decide whether it still fits).
        view = self.c.store.views[client]
        rows = view.tokens
        pending = [t for t in range(len(rows)) if rows.is_pending(t)]
        self.commits.append(
            Commit(
                client=client,
                commit=commit,
                owner=tuple(rows.owner),
                incarnation=tuple(rows.incarnation),
                nodes={n.name: n for n in view.nodes},
                pending_to={t: rows.pending_to[t] for t in pending},
                epoch=array("q", rows.epoch),
                locks=view.locks,
                db_now=view.now,
                generation=view.site.generation,
            )
        )

    def sent(self, commit: PlanCommit) -> None:
        for entry in self.commits:
            if entry.commit is commit and not entry.sent:
                entry.sent = True
                entry.suspicious = self._still_claimed(commit)

    def _still_claimed(self, commit: PlanCommit) -> list[tuple[int, str]]:
        found = []
        for a in commit.assigns:
            sim = self.checker.by_incarnation.get(a.expected_incarnation or -1)
            if (
                sim is None
                or sim.crashed
                or sim.node.snapshot.incarnation != a.expected_incarnation
            ):
                continue
            if a.token in sim.node.snapshot.claimable(self.c.local(sim)):
                found.append((a.token, sim.key))
        return found

    def _settle(self, entry: Commit) -> None:
        state = self.c.store.site_state(self.c.site)
        assert state is not None
        commit = entry.commit
        accepted = any(
            r.generation == entry.generation + 1 and r.entry is commit.history
            for r in state.history[-8:]
        )
        if not accepted or commit.history is None:
            return
        self.checker.stats["plans"] += 1
        if entry.suspicious:
            token, key = entry.suspicious[0]
            self.fail(2, f"plan took token {token} directly from {key}, which still claims it")
        for a in commit.assigns:
            if a.expected_incarnation is not None:
                self.checker.buried.add(a.expected_incarnation)
            if state.tokens.epoch[a.token] <= entry.epoch[a.token]:
                self.fail(6, f"token {a.token} changed hands without an epoch bump")
        self._laws(entry)

    def _laws(self, entry: Commit) -> None:
        """Invariants 4 and 5 on the plan the leader computed (recomputed from the same
        inputs: the planner is deterministic), and the commit as its faithful subset."""
        if self.load_laws is not None:
            self.load_laws.judge(entry)
            return
        commit = entry.commit
        history = commit.history
        assert history is not None
        names = history.nodes_after
        pins = resolve_locks(entry.locks, entry.db_now).pins
        caps = {n: entry.nodes[n].capacity for n in names if n in entry.nodes}
        intended = plan(self.total, entry.owner, names, pins, caps)
        final = list(entry.owner)
        for t, destination in entry.pending_to.items():
            final[t] = destination
        for a in commit.assigns:
            final[a.token] = a.owner
        for r in commit.revokes:
            final[r.token] = r.destination
        waiting = self.waiting(entry)
        for t, target in enumerate(intended.assignment):
            if final[t] != target and t not in waiting:
                self.fail(4, f"token {t}: plan says {target}, the commit leaves it with {final[t]}")
        unsatisfiable = self.pins(intended.assignment, names, pins)
        expected_unowned = self.total if not names else unsatisfiable
        if history.unowned != expected_unowned or history.moved != intended.moved:
            self.fail(4, f"history says moved {history.moved}, unowned {history.unowned}")
        if not pins and names:
            loads, weight = intended.loads, weights(intended.nodes, caps) or [1] * len(names)
            quota = [
                (self.total * w // sum(weight), -(-self.total * w // sum(weight))) for w in weight
            ]
            if None in intended.assignment or any(
                not lo <= n <= hi for n, (lo, hi) in zip(loads, quota, strict=True)
            ):
                self.fail(4, f"plan over {len(names)} nodes is not proportional: {list(loads)}")
            bound = lower_bound_moves(self.total, entry.owner, names, caps)
            if intended.moved != bound:
                self.fail(4, f"plan moves {intended.moved}; the lower bound is {bound}")
        self.checker.stats["plans_checked"] += 1
        self.checker.stats["plans_waiting"] += bool(waiting)

    def waiting(self, entry: Commit) -> set[int]:
        """Tokens whose holder can be neither revoked nor taken from yet
        (``rules.holding`` answers WAITING, as it does to the leader)."""
        now = entry.db_now
        found = set()
        for t, inc in enumerate(entry.incarnation):
            owner = entry.owner[t]
            row = entry.nodes.get(owner) if owner is not None else None
            if rules.holding(row, inc, now)[0] is rules.Hold.WAITING:
                found.add(t)
        return found

    def pins(
        self,
        assignment: Sequence[str | None],
        names: tuple[str, ...],
        pins: Mapping[int, tuple[str, ...]],
    ) -> int:
        """Invariant 5 on one plan: pinned tokens only where their first live match
        allows; returns how many match no live node (the plan must report them)."""
        cache: dict[tuple[str, ...], frozenset[str] | None] = {}
        unsatisfiable = 0
        for token, patterns in pins.items():
            if patterns not in cache:
                cache[patterns] = self.checker.eligible(patterns, names)
            allowed, owner = cache[patterns], assignment[token]
            unsatisfiable += allowed is None
            if allowed is None and owner is not None:
                self.fail(5, f"token {token} pinned to {patterns} (no live match) given to {owner}")
            if allowed is not None and owner not in allowed:
                self.fail(5, f"token {token} pinned to {patterns} planned onto {owner}")
        return unsatisfiable
