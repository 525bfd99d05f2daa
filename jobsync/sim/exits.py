# Law (blocking).  A verb that meets a row lock (a user transaction holding claim
# rows, a verb paused inside its transaction holding node rows) pauses its
# whole process for the wait: the lock timeout at most when bounded lock
# waits are on, else until the holder ends, forever when the holder is the
# waiter's own transaction (a deadlock).  The verb then fails, as a
# statement cancelled by ``lock_timeout`` does.  Invariant 8 keeps the total
# time one process spends blocked behind one holder within ``lock_bound``.
#
# Exits.  ``give_up`` is a process leaving at once with its row deregistered
# (a failed enter, Ctrl-C, a drain timeout); ``sigterm`` runs the production
# ``ShutdownPolicy`` on the process's own clock and ends the process when it
# says EXIT; invariant 7 requires every SIGTERMed process to end within its
# deadline (``drain_timeout_sec`` + grace, pauses excepted).
"""Blocking on row locks, and the ways a simulated process ends."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

from jobsync.backends.memory import MemoryTransaction
from jobsync.core.errors import BackendUnavailable, JobSyncError, LockTimeout
from jobsync.core.lifecycle import TERMINAL
from jobsync.runtime.node import Signal
from jobsync.runtime.shutdown import ShutdownPolicy, Step
from jobsync.sim.events import Events
from jobsync.sim.process import SimNode
from jobsync.sim.store import PausedVerb

LOCAL_POLL = 0.05
"""How often a SIGTERMed process's watchdog looks at its state (as the Job's does)."""


class Exits(Events):
    """Lock waits (invariant 8) and exits: giving up, user transactions, SIGTERM."""

    def give_up(self, name: str) -> None:
        """The process leaves at once, deregistering its row (a failed enter, Ctrl-C,
        a drain timeout: the Job's teardown) and exits."""
        sim = self.nodes[name]
        node = sim.node
        if sim.crashed:
            return
        inc = node.incarnation
        if inc is not None and node.state not in TERMINAL:
            try:
                sim.handle.deregister(self.site, sim.name, inc)
            except JobSyncError as exc:
                self.log(name, f"deregistration at exit failed: {exc!r}")
        self.crash(name, "gives up and exits")

    def begin_transaction(self, sim: SimNode, hold: float) -> MemoryTransaction:
        """Open a user transaction of ``sim`` that will be held ``hold`` seconds."""
        tx = self.store.transaction(sim.client)
        self._tx_end[id(tx)] = self.now + hold
        self._txs.setdefault(sim.client, []).append(tx)
        return tx

    def end_transaction(self, sim: SimNode, tx: MemoryTransaction, *, commit: bool) -> None:
        self._tx_end.pop(id(tx), None)
        mine = self._txs.get(sim.client, [])
        if tx in mine:
            mine.remove(tx)
        if tx.open:
            tx.commit() if commit else tx.rollback()

    def sigterm(self, name: str) -> None:
        """SIGTERM: the process's watchdog runs the production shutdown policy."""
        sim = self.nodes[name]
        if sim.crashed or name in self.terminated:
            return
        cfg = self.config
        policy = ShutdownPolicy(
            signalled_at=self.local(sim),
            drain_timeout=cfg.drain_timeout_sec,
            enforce_deadline=self.defences.sigterm_deadline,
        )
        # The bound holds on the process's own clock (which may run slow, within the
        # drift the clock assumptions allow); the watchdog looks every LOCAL_POLL.
        deadline = self._to_true(sim, policy.exit_deadline) + LOCAL_POLL
        self.terminated[name] = deadline
        if sim.user is not None:
            sim.user.halt()
        self.log(name, "SIGTERM")
        self._watch(sim, policy, drained=False)
        self.at(deadline + 0.01, functools.partial(self._ended, sim, deadline))

    def _watch(self, sim: SimNode, policy: ShutdownPolicy, *, drained: bool) -> None:
        name = sim.key
        if sim.crashed:
            return
        if self.now < sim.paused_until:  # a stopped process's watchdog does not run
            self.at(sim.paused_until, functools.partial(self._watch, sim, policy, drained=drained))
            return
        local = self.local(sim)
        open_claims = sim.user.open_claims() if sim.user is not None else 0
        step = policy.decide(
            local,
            open_claims=open_claims,
            drain_started=drained,
            node_done=sim.node.state in TERMINAL,
        )
        if step is Step.EXIT:
            self.crash(name, "ends after SIGTERM")
            sim.exited = True
            return
        if step is Step.DRAIN and not drained:
            drained = True
            if sim.user is not None:
                sim.user.finish(release=True)
            sim.leaving = True
            sim.signals.append(Signal.DRAIN)
            self._schedule(name, max(self.now, sim.paused_until))
            self.log(name, "SIGTERM: draining")
        wake = self._to_true(
            sim, policy.next_check(local, open_claims=open_claims, drain_started=drained)
        )
        self.at(
            min(wake, self.now + LOCAL_POLL),
            functools.partial(self._watch, sim, policy, drained=drained),
        )

    def _ended(self, sim: SimNode, deadline: float) -> None:
        if sim.crashed:
            return
        if self.now < sim.paused_until:  # stopped by SIGSTOP: the deadline waits with it
            later = sim.paused_until + (self.now - deadline)
            self.at(later, functools.partial(self._ended, sim, later - 0.01))
            return
        self._violation(
            7, f"{sim.key} still runs {self.now - deadline:.3f}s after its SIGTERM deadline"
        )

    def _contend(self, client: str, verb: str, blockers: Sequence[object]) -> None:
        """``client``'s ``verb`` meets row locks held by ``blockers``: pause the process
        for the wait, judge it (invariant 8), then fail the verb."""
        key = self._clients.get(client)
        if key is None:
            return  # not a simulated process (the script's admin handle): no wait
        sim = self.nodes[key]
        ends = [self._holder_end(b, client) for b in blockers]
        release = max(ends)
        bounded = self.defences.bounded_lock_waits
        timeout = self.store.lock_timeout
        wait = min(release - self.now, timeout) if bounded else release - self.now
        first = self._episode(client, blockers[0], wait)
        who = ", ".join(map(repr, blockers))
        if wait == math.inf:
            self._violation(8, f"{key}: {verb} waits forever on {who} (its own transaction)")
        if self.now + wait - first > self.lock_bound + 1e-9:
            self._violation(
                8,
                f"{key}: {verb} blocked {self.now + wait - first:.3f}s behind {who} "
                f"(bound {self.lock_bound:g}s)",
            )
        self.log(key, f"{verb} waits {wait:.3f}s on {who}")
        sim.paused_until = max(sim.paused_until, self.now + wait)
        self._schedule(key, sim.paused_until)
        if bounded:
            raise LockTimeout(f"{verb} of {client!r}: lock timeout behind {who}")
        raise BackendUnavailable(f"{verb} of {client!r} waited {wait:.3f}s behind {who}")

    def _holder_end(self, holder: object, waiter: str) -> float:
        if isinstance(holder, PausedVerb):
            return holder.until
        if isinstance(holder, MemoryTransaction):
            if holder.client == waiter:
                return math.inf  # the waiter's own transaction: it cannot end while we wait
            return self._tx_end.get(id(holder), self.now)
        return self.now

    def _episode(self, client: str, holder: object, wait: float) -> float:
        """When ``client`` started waiting behind ``holder`` (back-to-back waits add up)."""
        slot = (client, id(holder))
        first, last_end = self._blocked.get(slot, (self.now, -math.inf))
        if self.now > last_end + self.store.lock_timeout + self.config.heartbeat_interval_sec:
            first = self.now
        self._blocked[slot] = (first, self.now + wait)
        return first

    def _pause_in_verb(self, client: str, seconds: float, why: str) -> None:
        key = self._clients.get(client)
        if key is not None and self.stall(client, seconds):
            self.log(key, why)
