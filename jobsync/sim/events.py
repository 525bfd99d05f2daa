# Law: events run in (virtual time, insertion sequence) order and each one is
# one of TICK (a node's own wake-up, which its ``tick`` returns), USER (its
# simulated user thread), NOTIFY (one broadcast per burst of changes; per node
# when delayed) or ACTION (a scripted step or fault).  A *stall* suspends one
# process inside the verb it is running while every other event runs: a
# leader paused between its read and its commit, without threads.
"""Running a simulated cluster's events: ticks, user steps, notifications, stalls."""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable

from jobsync.backends.base import PlanCommit
from jobsync.core.errors import BackendUnavailable, JobSyncError
from jobsync.core.lifecycle import TERMINAL
from jobsync.runtime.node import Signal
from jobsync.sim.errors import InvariantViolation
from jobsync.sim.process import SimNode
from jobsync.sim.world import NOTIFY, TICK, USER, World

NOTIFY_LATENCY = 0.002
"""Virtual seconds between a commit and a listener waking on its notification."""


class Events(World):
    """The event loop of a simulated cluster."""

    def stall(self, client: str, seconds: float) -> bool:
        """From inside ``client``'s tick (a commit hook, a slowed verb): hold its statement
        for ``seconds`` while every other event runs.  Raises BackendUnavailable (the
        statement is lost) if the process crashed or lost the backend meanwhile.  Stalls
        do not nest."""
        key = self._clients.get(client)
        if key is None or self._stalled:
            return False
        sim = self.nodes[key]
        self._stalled.add(sim)
        self.log(key, f"plan commit stalls {seconds:.3f}s")
        try:
            self._run_events(self.now + seconds)
            while sim.paused_until > self.now and not sim.crashed:
                self._run_events(sim.paused_until)
        finally:
            self._stalled.discard(sim)
        if sim.crashed or self.store.unreachable(client):
            raise BackendUnavailable(f"{client!r} lost its connection during a plan commit")
        return True

    def _slow(self, client: str, seconds: float) -> None:
        key = self._clients.get(client)
        if key is not None and self._ticking is self.nodes[key]:  # the node's own thread
            self.stall(client, seconds)

    def run_for(self, seconds: float) -> None:
        self.run_until_time(self.now + seconds)

    def run_until_time(self, instant: float) -> None:
        self._run_events(instant)
        if self.check:
            self.check_exclusive()

    def _run_events(self, instant: float) -> None:
        self._after_event()  # changes made between events (a script's direct calls) notify too
        while self._queue and self._queue[0][0] <= instant:
            self.step()
        self.clock.now = max(self.clock.now, instant)

    def run_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Run until ``predicate()`` holds (checked after every event) or ``timeout`` passes."""
        limit = self.now + timeout
        self._after_event()
        while not predicate():
            if not self._queue or self._queue[0][0] > limit:
                self.clock.now = max(self.clock.now, limit)
                return predicate()
            self.step()
        return True

    def step(self) -> None:
        at, _, kind, key = heapq.heappop(self._queue)
        self.clock.now = max(self.clock.now, at)
        self.events += 1
        if kind == TICK:
            self._tick(key, at)
        elif kind == USER:
            self._user(key, at)
        elif kind == NOTIFY:
            self._notify(key)
        else:
            self._actions.pop(key)()
        self._after_event()

    def _tick(self, key: str, at: float) -> None:
        sim = self.nodes.get(key)
        if sim is None or sim.crashed or at != sim.wake:
            return  # stale entry
        if self.now < sim.paused_until:
            self._schedule(key, sim.paused_until)
            return
        if sim in self._stalled:
            return  # inside its own plan commit: the outer tick reschedules
        signals, sim.signals = sim.signals, []
        if sim.missed_notify:
            sim.missed_notify = False
            if self._notified(sim):
                signals.append(Signal.NOTIFIED)
        local = self.local(sim)
        self._ticking = sim
        try:
            wake_local = sim.node.tick(local, signals)
        except InvariantViolation:
            raise  # found by a hook inside the tick (a commit, an acknowledgement)
        except Exception as exc:  # a non-transient error ends the node, as in production
            self._failed(sim, exc)
            return
        finally:
            self._ticking = None
        if _crashed(sim):  # inside its own tick (during a stalled plan commit)
            return
        self._consume(sim)
        if sim.node.state not in TERMINAL:
            wake = self.now if sim.signals else self._to_true(sim, wake_local)
            self._schedule(key, wake)
        if self.checker is not None:
            self.checker.after_tick(sim, local, wake_local)

    def _failed(self, sim: SimNode, exc: Exception) -> None:
        self.errors[sim.key] = exc
        sim.crashed = True
        self.log(sim.key, f"error {exc!r}")
        if self.checker is not None:
            self.checker.forget(sim)
            self.checker.fail(7, f"{sim.key} exited on {exc!r}")

    def _user(self, key: str, at: float) -> None:
        sim = self.nodes.get(key)
        if sim is None or sim.crashed or sim.user is None or at != sim.user_wake:
            return
        if self.now < sim.paused_until:
            self._push_user(sim, sim.paused_until)
            return
        wake = sim.user.step()
        if wake < math.inf:
            self._push_user(sim, max(wake, self.now))

    def _push_user(self, sim: SimNode, at: float) -> None:
        sim.user_wake = at
        self._push(at, USER, sim.key)

    def _consume(self, sim: SimNode) -> None:
        """Take the node's rebalance events as its callback runner would (or would not)."""
        if not sim.node.events:
            return
        if sim.consumer == "slow":
            if self.now < sim.consume_at:
                return  # a slow consumer: events wait, ticks must not
            sim.consume_at = self.now + 2.0 + 8.0 * self.rng.random()
        events = sim.node.take_events()
        if self.checker is not None:
            self.checker.on_events(sim, events)
        if sim.consumer == "raising":
            sim.callback_errors += 1  # the callback raised; production logs and counts it

    def _after_event(self) -> None:
        state = self.store.site_state(self.site)
        if state is not None and state.signals != self._signals_seen:
            self._signals_seen = state.signals
            if not self._broadcast_pending:
                self._broadcast_pending = True
                self._push(self.now + NOTIFY_LATENCY, NOTIFY, "*")
            for sim in self.nodes.values():
                if sim.notify_delay > 0 and not sim.notify_pending and sim.running:
                    sim.notify_pending = True
                    self._push(self.now + NOTIFY_LATENCY + sim.notify_delay, NOTIFY, sim.key)
        if self.checker is not None:
            self.checker.after_event()

    def _notify(self, key: str) -> None:
        if key == "*":
            self._broadcast_pending = False
            for sim in self.nodes.values():
                if sim.notify_delay <= 0:
                    self._deliver(sim)
            return
        target = self.nodes.get(key)
        if target is not None:
            target.notify_pending = False
            self._deliver(target)

    def _deliver(self, sim: SimNode) -> None:
        if not sim.running or sim.node.registration is None:
            return
        if self.now < sim.paused_until or sim in self._stalled:
            sim.missed_notify = True  # buffered on its connection until it runs again
            return
        if self._notified(sim):
            sim.signals.append(Signal.NOTIFIED)
            if sim.wake > self.now:
                self._schedule(sim.key, self.now)

    def _notified(self, sim: SimNode) -> bool:
        if sim.node.registration is None:
            return False
        try:
            return sim.handle.take_notification(self.site)
        except JobSyncError:  # the site is gone: nothing to deliver
            return False

    def _before_commit(self, client: str, commit: PlanCommit) -> None:
        if self.checker is not None:
            self.checker.commit_begins(client, commit)
        try:
            for hook in self.commit_hooks:
                hook(client, commit)
        finally:
            if self.checker is not None:
                self.checker.commit_sent(client, commit)


def _crashed(sim: SimNode) -> bool:
    return sim.crashed
