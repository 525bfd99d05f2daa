# Law: the simulated user does what a Job's user does, through the real
# backend verbs, and exactly-once is judged on its side effects.
#
# ``SimJob`` gives one simulated process the Job verbs user code calls
# (``can_claim_task``, ``add_task(s)``, ``complete``, ``release``,
# ``my_tokens``), implemented as runtime/job.py implements them: the claim
# carries the snapshot's incarnation and epoch and is refused (False, never
# an exception) on a transient error.  ``UserLoop`` is the README loop on
# that façade, on its own "thread" (USER events, which a pause stops and a
# crash ends): claim what the node may claim now; right after a claim is
# accepted, check the side-effect table (check-after-claim: work a cut-off
# owner already did is not redone); when the work is done, ``complete`` and
# apply the side effect in one "transaction" (as
# ``job.complete(task, connection=conn)`` does on PostgreSQL), so the effect
# lands if and only if the completion was accepted.  A task's effect applied
# twice, or a claim accepted for work already done, is therefore a library
# bug.  A completion that hits a transient error is retried while the claim
# is open; one the backend refuses (the claim was released after the lease
# ran out) is dropped, and the token's next owner redoes the task.
#
# Transactions held open.  When ``hold_next`` is armed (the ``user_tx``
# fault), the next completion runs inside a user transaction (the memory
# form of ``complete(task, connection=conn)``) that stays open for the drawn
# time, locking its claim rows, and the side effect lands when it commits;
# with ``release_inside`` the user also calls ``release`` on the coordination
# handle while its own transaction holds the row, then rolls back (the
# claims stay open and are completed later).
#
# Your own worker logic can replace ``UserLoop``: pass
# ``VirtualCluster(..., user=factory)`` where ``factory(cluster, sim)``
# returns an object with ``step() -> next true instant`` and
# ``finish(release=...)``, and use ``SimJob(cluster, sim)`` inside it.
"""The simulated user: the Job façade, the user loop and its side-effect table."""

from __future__ import annotations

import contextlib
import datetime
import math
import random
from collections.abc import Callable, Container, Iterable
from typing import TYPE_CHECKING, Protocol

import attrs

from jobsync.backends.base import ClaimRequest
from jobsync.backends.memory import MemoryTransaction
from jobsync.core.errors import JobSyncError
from jobsync.core.hashing import canonical, token_for, token_function
from jobsync.core.lifecycle import TERMINAL, NodeState

if TYPE_CHECKING:
    from jobsync.sim.cluster import VirtualCluster
    from jobsync.sim.process import SimNode

DATE = datetime.date(2024, 1, 1)


class User(Protocol):
    """A simulated process's user thread, driven by the cluster's USER events."""

    def step(self) -> float:
        """Do one pass; return the true instant of the next (``math.inf``: done)."""
        ...

    def finish(self, *, release: bool) -> None:
        """The ``with`` block ends (drain): settle or release open claims."""
        ...

    def halt(self) -> None:
        """SIGTERM arrived: stop claiming at once (open claims may still complete)."""
        ...

    def open_claims(self) -> int:
        """Claims taken and not yet completed or released (a SIGTERM waits for them)."""
        ...


@attrs.define
class Claim:
    incarnation: int
    token: int
    epoch: int
    due: float = 0.0


class SimJob:
    """The Job verbs user code calls, on one simulated process, in virtual time."""

    def __init__(self, cluster: VirtualCluster, sim: SimNode) -> None:
        self.c = cluster
        self.sim = sim
        cfg = cluster.config
        self.token_of = token_function(cfg.total_tokens, cfg.hash_function)
        self.open: dict[str, Claim] = {}
        self.halted = False

    @property
    def name(self) -> str:
        return self.sim.name

    @property
    def my_tokens(self) -> frozenset[int]:
        if self.halted:
            return frozenset()
        return self.sim.node.snapshot.claimable(self.c.local(self.sim))

    def can_claim_task(self, task: object) -> bool:
        snap = self.sim.node.snapshot
        token = self.token_of(canonical(task))
        return (
            not self.halted
            and snap.owned[token] == 1
            and self.c.local(self.sim) < snap.lease_deadline
        )

    def add_task(self, task: object) -> bool:
        return bool(self.add_tasks([task]))

    def add_tasks(self, tasks: Iterable[object]) -> set[str]:
        """Claim in one round trip; the canonical keys claimed (empty on a transient error)."""
        c, sim = self.c, self.sim
        snap = sim.node.snapshot
        inc = snap.incarnation
        if self.halted or inc is None or c.local(sim) >= snap.lease_deadline:
            return set()
        requests = []
        for key in dict.fromkeys(canonical(t) for t in tasks):
            token = self.token_of(key)
            if snap.owned[token]:
                requests.append(ClaimRequest(task_key=key, token=token, epoch=snap.epochs[token]))
        if not requests:
            return set()
        try:
            got = sim.handle.claim(c.site, DATE, sim.name, inc, requests)
        except JobSyncError:
            return set()
        for r in requests:
            if r.task_key in got:
                if c.checker is not None:
                    c.checker.on_claim(sim, r.token, r.epoch, inc)
                self.open[r.task_key] = Claim(inc, r.token, r.epoch)
        return set(got)

    def complete(
        self, keys: Iterable[str], cost: Callable[[int], float] | None = None
    ) -> frozenset[str] | None:
        """Complete open claims (each with ``cost`` of its token, if given); the keys
        recorded, or None on a transient error (the claims stay open for a retry).
        Keys the backend refused are dropped."""
        return self._settle(keys, release=False, cost=cost)

    def release(self, keys: Iterable[str]) -> frozenset[str] | None:
        return self._settle(keys, release=True)

    def _settle(
        self, keys: Iterable[str], *, release: bool, cost: Callable[[int], float] | None = None
    ) -> frozenset[str] | None:
        c, sim = self.c, self.sim
        by_inc: dict[tuple[int, float | None], list[str]] = {}
        for key in keys:
            if key in self.open:
                claim = self.open[key]
                price = None if cost is None else cost(claim.token)
                by_inc.setdefault((claim.incarnation, price), []).append(key)
        settled: set[str] = set()
        for (inc, price), group in by_inc.items():
            try:
                if release:
                    done = sim.handle.release(c.site, DATE, inc, group)
                else:
                    done = sim.handle.complete(c.site, DATE, inc, group, cost=price)
            except JobSyncError:
                if release:
                    return None
                # The side effect commits with the completion (one transaction): if
                # the completion committed and only its answer was lost, so did the
                # effect.  Read the store as the user's database would remember it.
                done = self._committed_completions(inc, group)
                if not done:
                    return None
            settled.update(done)
            for key in group:
                del self.open[key]
        return frozenset(settled)

    def _committed_completions(self, inc: int, keys: list[str]) -> frozenset[str]:
        state = self.c.store.site_state(self.c.site)
        if state is None:
            return frozenset()
        records = {r.task_key: r for r in state.claims.audit(DATE, self.sim.name)}
        return frozenset(
            k
            for k in keys
            if (r := records.get(k)) is not None and r.incarnation == inc and r.status == "done"
        )


@attrs.define
class Effect:
    """One applied side effect: who did it, under which incarnation and epoch, when."""

    node: str
    incarnation: int
    epoch: int
    at: float


class TaskBoard:
    """The work of one run: tasks by token, and the side-effect table."""

    def __init__(self, total_tokens: int, hash_function: str, count: int) -> None:
        self.keys = [f"task-{i}" for i in range(count)]
        self.token = {key: token_for(key, total_tokens, hash_function) for key in self.keys}
        by_token: dict[int, list[str]] = {}
        for key in self.keys:
            by_token.setdefault(self.token[key], []).append(key)
        self.undone: dict[int, list[str]] = dict(sorted(by_token.items()))
        self.effects: dict[str, Effect] = {}

    @property
    def done(self) -> bool:
        return not self.undone

    def candidates(self, tokens: frozenset[int], skip: Container[str], limit: int) -> list[str]:
        """Up to ``limit`` undone tasks on ``tokens``, lowest token first."""
        undone = self.undone
        pool = sorted(tokens) if len(tokens) <= len(undone) else undone
        found: list[str] = []
        for token in pool:
            if token not in tokens:
                continue
            for key in undone.get(token, ()):
                if key not in skip:
                    found.append(key)
                    if len(found) >= limit:
                        return found
        return found

    def apply(self, key: str, effect: Effect, cluster: VirtualCluster) -> None:
        first = self.effects.get(key)
        if first is not None:
            _violation(
                cluster,
                f"side effect of {key} applied twice: by {first.node} (incarnation "
                f"{first.incarnation}, epoch {first.epoch}) and by {effect.node} "
                f"(incarnation {effect.incarnation}, epoch {effect.epoch})",
            )
        self.effects[key] = effect
        left = self.undone.get(self.token[key])
        if left is not None:
            left.remove(key)
            if not left:
                del self.undone[self.token[key]]


def _violation(cluster: VirtualCluster, message: str) -> None:
    if cluster.checker is not None:
        cluster.checker.fail(2, message)


class UserLoop:
    """The built-in user: claim, check, work, complete-and-apply (see the module law)."""

    def __init__(self, cluster: VirtualCluster, sim: SimNode, rng: random.Random) -> None:
        assert cluster.board is not None, "the built-in user loop works on a TaskBoard"
        self.c = cluster
        self.board = cluster.board
        self.job = SimJob(cluster, sim)
        self.rng = rng
        cfg = cluster.config
        self.period = cfg.heartbeat_interval_sec * (0.1 + 0.4 * rng.random())
        self.batch = rng.randint(1, 6)
        self.slow_work = rng.random() < 0.2
        self.quiet = False
        """After faults stop: short work, so the backlog drains in bounded time."""
        self.hold_next: tuple[float, bool] | None = None
        """(seconds, release_inside): the next completion runs in a transaction held open."""
        self.tx: tuple[MemoryTransaction, dict[str, Claim], float] | None = None

    def halt(self) -> None:
        self.job.halted = True

    def open_claims(self) -> int:
        return len(self.job.open) + (len(self.tx[1]) if self.tx is not None else 0)

    def step(self) -> float:
        c, job = self.c, self.job
        node = job.sim.node
        if self.tx is not None:
            if c.now < self.tx[2]:
                return self.tx[2]  # busy inside its own transaction
            self._end_tx(commit=True)
        due = [k for k, claim in job.open.items() if claim.due <= c.now]
        if due:
            self._complete(due)
        if self.tx is not None:
            return self.tx[2]  # the user thread is inside its transaction until then
        if node.state is NodeState.SUPERSEDED and job.open:
            self.finish(release=True)  # NodeNameConflict reached the user: exit by exception
        if not job.halted and node.state not in TERMINAL and not node.draining:
            self._claim_some()
        if node.state in TERMINAL and not job.open:
            return math.inf
        later = min((o.due for o in job.open.values() if o.due > c.now), default=math.inf)
        return min(later, c.now + self.period)  # failed completions retry every period

    def _claim_some(self) -> None:
        board, job = self.board, self.job
        if board.done:
            return
        tokens = job.my_tokens
        keys = board.candidates(tokens, job.open, self.batch) if tokens else []
        for key in sorted(job.add_tasks(keys)):
            if key in board.effects:  # check-after-claim
                _violation(self.c, f"{job.sim.key} claimed {key}, already done")
            job.open[key].due = self.c.now + self._work_time()

    def _work_time(self) -> float:
        cfg = self.c.config
        if self.quiet:
            return 0.05 * self.rng.random()
        if self.slow_work and self.rng.random() < 0.1:
            return cfg.heartbeat_timeout_sec * (1 + self.rng.random())
        return cfg.heartbeat_interval_sec * self.rng.random()

    def _complete(self, keys: list[str]) -> None:
        if self.hold_next is not None and not self.quiet and keys:
            hold, release_inside = self.hold_next
            self.hold_next = None
            self._complete_in_transaction(keys, hold, release_inside)
            return
        claims = {k: self.job.open[k] for k in keys}
        done = self.job.complete(keys, self.c.cost)
        if done is None:
            return  # queued: retried on the next pass while the claims are open
        for key in sorted(done):  # the side effect commits with the completion
            claim = claims[key]
            effect = Effect(self.job.name, claim.incarnation, claim.epoch, self.c.now)
            self.board.apply(key, effect, self.c)

    def _complete_in_transaction(self, keys: list[str], hold: float, release_inside: bool) -> None:
        """Complete inside a user transaction held open ``hold`` seconds (see the law)."""
        c, job = self.c, self.job
        sim = job.sim
        by_inc: dict[int, list[str]] = {}
        for key in keys:
            by_inc.setdefault(job.open[key].incarnation, []).append(key)
        inc, group = min(by_inc.items())
        tx = c.begin_transaction(sim, hold)
        c.log(sim.key, f"user transaction completes {len(group)} task(s), open {hold:.3f}s")
        try:
            done = sim.handle.complete_in(tx, c.site, DATE, inc, group)
        except JobSyncError:
            c.end_transaction(sim, tx, commit=False)
            return
        held = {key: job.open.pop(key) for key in group if key in done}
        for key in group:
            if key not in done:
                job.open.pop(key, None)  # refused: the claim was released meanwhile
        self.tx = (tx, held, c.now + hold)
        if release_inside and held:
            key = min(held)
            c.log(sim.key, f"user releases {key} while its own transaction holds the row")
            with contextlib.suppress(JobSyncError):  # the lock timeout: it rolls back instead
                sim.handle.release(c.site, DATE, inc, [key])
            self._end_tx(commit=False)

    def _end_tx(self, *, commit: bool) -> None:
        assert self.tx is not None
        tx, held, _ = self.tx
        self.tx = None
        c, job = self.c, self.job
        if not tx.open:
            return  # rolled back when the process died
        c.end_transaction(job.sim, tx, commit=commit)
        for key, claim in sorted(held.items()):
            if commit:  # the side effect commits with the completion
                self.board.apply(key, Effect(job.name, claim.incarnation, claim.epoch, c.now), c)
            else:
                claim.due = c.now  # still our open claim: complete it again
                job.open[key] = claim

    def finish(self, *, release: bool) -> None:
        """Leaving the ``with`` block: complete open claims, or release them on an exception."""
        job = self.job
        job.halted = True
        if not release:
            self._complete(sorted(job.open))
        elif job.release(sorted(job.open)) is None:
            job.open.clear()  # the process exits anyway: released when its incarnation is reaped
