# Law: a run is a pure function of its seed and its script.  Real ``Node``
# objects (the class production runs) share one MemoryStore under one virtual
# clock that jumps from event to event; nothing sleeps and nothing reads the
# host's time, so a failure replays exactly.
#
# Events, ordered by (virtual time, insertion sequence): TICK (a node's own
# wake-up, which its ``tick`` returns), USER (its simulated user thread),
# NOTIFY (one broadcast per burst of changes; per node when delayed), ACTION
# (a scripted workload step or fault).
# The store's clock is ``true + db_offset``; each node reads its own local
# clock (offset, rate, forward jumps for suspends), which is how the clock
# assumptions of docs/PROTOCOL.md section 5 are exercised.  A plan commit may be
# *stalled*: the committing node's tick is suspended inside its commit while
# every other event runs, which is how "a leader paused between its read and
# its commit" is modelled without threads.
#
# With ``check=True`` an ``invariants.Checker`` sees every tick, plan commit,
# acknowledgement and claim, and raises InvariantViolation at the first
# breach; invariant 1 is kept incrementally, so a check costs what changed.
#
# Blocking.  A verb that meets a row lock (a user transaction holding claim
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
"""A virtual-time cluster of real Nodes on one MemoryStore, with fault injection."""

from __future__ import annotations

import functools
import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from jobsync.backends.base import PlanCommit
from jobsync.backends.memory import MemoryTransaction
from jobsync.core.defences import PRODUCTION, Defences
from jobsync.core.errors import BackendUnavailable, JobSyncError, LockTimeout
from jobsync.core.lifecycle import TERMINAL, NodeState
from jobsync.runtime.config import CoordinationConfig
from jobsync.runtime.node import Node, Signal
from jobsync.runtime.shutdown import ShutdownPolicy, Step
from jobsync.sim.errors import InvariantViolation
from jobsync.sim.process import CONSUMERS, LocalClock, SimNode
from jobsync.sim.store import PausedVerb, SimStore, VirtualClock

if TYPE_CHECKING:
    from jobsync.sim.invariants import Checker
    from jobsync.sim.workload import TaskBoard, User

NOTIFY_LATENCY = 0.002
"""Virtual seconds between a commit and a listener waking on its notification."""
HISTORY = 400
"""Events kept for the report printed around a violation."""
TICK, USER, NOTIFY, ACTION = 0, 1, 2, 3
LOCAL_POLL = 0.05
"""How often a SIGTERMed process's watchdog looks at its state (as the Job's does)."""
__all__ = ["CONSUMERS", "InvariantViolation", "LocalClock", "SimNode", "VirtualClock"]


class VirtualCluster:
    """Nodes of one site under virtual time.  ``step`` runs one event; ``run_for`` many.

    ``add`` processes, then script faults at virtual instants (``at(t, fn)``):
    ``crash``, ``pause``/``resume``, ``suspend``, ``cut_off``/``restore``,
    ``store.cut_off_all``, ``store.fail_next``/``fail_verb``/``slow_verbs``,
    ``store.lose_notifications``, ``delay_notifications``, ``block_acks``,
    ``step_db_clock``, ``stall`` (from ``commit_hooks``), ``add`` again for a
    second process of a name, ``heal``; ``run_until(pred, timeout)``.  With
    ``user=factory`` each process also runs your worker logic (workload.SimJob).
    """

    def __init__(
        self,
        config: CoordinationConfig,
        *,
        seed: int = 0,
        site: str = "sim",
        start: float = 1_000_000.0,
        check: bool = True,
        board: TaskBoard | None = None,
        user: Callable[[VirtualCluster, SimNode], User] | None = None,
        defences: Defences = PRODUCTION,
    ) -> None:
        self.config = config
        self.site = site
        self.defences = defences
        self.rng = random.Random(seed)
        self.clock = VirtualClock(start)
        self.store = SimStore(self.clock, defences)
        self.lock_bound = 1.0 + self.store.lock_timeout
        """Invariant 8: the longest a process may stay blocked behind one lock holder."""
        self._blocked: dict[tuple[str, int], tuple[float, float]] = {}
        self._tx_end: dict[int, float] = {}
        self._txs: dict[str, list[MemoryTransaction]] = {}
        self.terminated: dict[str, float] = {}
        """Processes sent SIGTERM: key -> the true instant by which each must have ended."""
        self.nodes: dict[str, SimNode] = {}
        self.check = check
        self.history: deque[tuple[float, str, str]] = deque(maxlen=HISTORY)
        self.errors: dict[str, Exception] = {}
        self.commit_hooks: list[Callable[[str, PlanCommit], None]] = []
        self.board = board
        self.user_factory = user
        self.events = 0
        self._queue: list[tuple[float, int, int, str]] = []
        self._seq = itertools.count()
        self._births = itertools.count(1)
        self._actions: dict[str, Callable[[], object]] = {}
        self._clients: dict[str, str] = {}
        self._signals_seen = 0
        self._broadcast_pending = False
        self._stalled: set[SimNode] = set()
        self._ticking: SimNode | None = None
        self.store.before_commit = self._before_commit
        self.store.on_slow = self._slow
        self.store.on_pause = self._pause_in_verb
        self.store.on_contend = self._contend
        self.checker: Checker | None = None
        if check:
            from jobsync.sim.invariants import Checker

            self.checker = Checker(self)
            self.store.on_ack = self.checker.on_ack

    @property
    def now(self) -> float:
        return self.clock.now

    def local(self, sim: SimNode) -> float:
        return sim.clock.read(self.clock.now)

    # -- membership scripting ------------------------------------------------------
    def add(self, name: str, *, clock: LocalClock | None = None, consumer: str = "fast") -> Node:
        """Start a process named ``name`` now (a new process, even if the name exists)."""
        return self.spawn(name, clock=clock, consumer=consumer).node

    def spawn(
        self, name: str, *, clock: LocalClock | None = None, consumer: str = "fast"
    ) -> SimNode:
        """``add``, returning the simulated process (its key may be ``name~2`` while
        an older process of that name still runs)."""
        born = next(self._births)
        handle = self.store.connect(f"{name}#{born}")
        node = Node(
            handle,
            self.site,
            name,
            self.config,
            rng=random.Random(self.rng.random()),
            defences=self.defences,
            process=handle.client,
        )
        key = self._key(name)
        sim = SimNode(
            name=name,
            key=key,
            node=node,
            handle=handle,
            clock=clock or LocalClock(),
            born=born,
            consumer=consumer,
        )
        old = self.nodes.get(key)
        if old is not None and self.checker is not None:
            self.checker.forget(old)
        self.nodes[key] = sim
        self._clients[handle.client] = key
        self._schedule(key, self.now)
        if self.user_factory is not None:
            sim.user = self.user_factory(self, sim)
        elif self.board is not None:
            from jobsync.sim.workload import UserLoop

            sim.user = UserLoop(self, sim, random.Random(self.rng.random()))
        if sim.user is not None:
            self._push_user(sim, self.now + 0.05 + 0.2 * self.rng.random())
        self.log(key, f"start {handle.client}")
        return sim

    def _key(self, name: str) -> str:
        key, n = name, 1
        while key in self.nodes and not self.nodes[key].crashed:
            n += 1
            key = f"{name}~{n}"
        return key

    def crash(self, name: str, why: str = "crash") -> None:
        """The process dies: no more ticks, no goodbye; its open transactions roll back
        (the database drops its connections)."""
        sim = self.nodes[name]
        if sim.crashed:
            return
        sim.crashed = True
        for tx in self._txs.pop(sim.client, []):
            if tx.open:
                tx.rollback()
        if self.checker is not None:
            self.checker.forget(sim)
        self.log(name, why)

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

    # -- user transactions ------------------------------------------------------------
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

    # -- SIGTERM ------------------------------------------------------------------------
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

    # -- blocking -----------------------------------------------------------------------
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

    def _violation(self, invariant: int, message: str) -> None:
        if self.checker is not None:
            self.checker.fail(invariant, message)

    def _pause_in_verb(self, client: str, seconds: float, why: str) -> None:
        key = self._clients.get(client)
        if key is not None and self.stall(client, seconds):
            self.log(key, why)

    def drain(self, name: str, *, release: bool = False) -> None:
        """Graceful leave: the user loop settles its claims, then the node drains."""
        sim = self.nodes[name]
        sim.leaving = True
        if sim.user is not None:
            sim.user.finish(release=release)
        sim.signals.append(Signal.DRAIN)
        self._schedule(name, max(self.now, sim.paused_until))
        self.log(name, "drain (releasing claims)" if release else "drain")

    def pause(self, name: str, seconds: float) -> None:
        """SIGSTOP for ``seconds``: no ticks, no user loop; its local clock keeps running."""
        sim = self.nodes[name]
        sim.paused_until = max(sim.paused_until, self.now + seconds)
        self._schedule(name, sim.paused_until)
        self.log(name, f"pause {seconds:.3f}s")

    def resume(self, name: str) -> None:
        """End a pause now."""
        sim = self.nodes[name]
        if sim.paused_until > self.now:
            sim.paused_until = self.now
            self._schedule(name, self.now)
            if sim.user is not None:
                self._push_user(sim, self.now)
            self.log(name, "resumed")

    def suspend(self, name: str, seconds: float, jump: float | None = None) -> None:
        """A suspend: paused, and on resume its boot clock reads ``jump`` (default
        ``seconds``) more than true time has advanced (the clock only ever jumps forward)."""
        self.pause(name, seconds)
        self.nodes[name].clock.offset += seconds if jump is None else jump
        self.log(name, "suspended (local clock jumps forward)")

    def node(self, name: str) -> Node:
        return self.nodes[name].node

    def live(self) -> list[SimNode]:
        return [s for s in self.nodes.values() if s.running]

    # -- faults ---------------------------------------------------------------------
    def cut_off(self, name: str) -> None:
        self.store.cut_off(self.nodes[name].client)
        self.log(name, "cut off from the backend")

    def restore(self, name: str) -> None:
        self.store.restore(self.nodes[name].client)
        self.log(name, "reachable again")

    def block_acks(self, name: str) -> None:
        """This process's acknowledgements fail (a releaser that never acknowledges)."""
        self.store.blocked_acks.add(self.nodes[name].client)
        self.log(name, "acknowledgements blocked")

    def unblock_acks(self, name: str) -> None:
        self.store.blocked_acks.discard(self.nodes[name].client)

    def delay_notifications(self, name: str, seconds: float) -> None:
        self.nodes[name].notify_delay = seconds
        self.log(name, f"notifications delayed {seconds:.3f}s")

    def step_db_clock(self, delta: float) -> None:
        self.clock.db_offset += delta
        self.log("db", f"clock steps {delta:+.4f}s (offset {self.clock.db_offset:+.4f})")

    def heal(self) -> None:
        """Faults stop: partitions, outages, blips, blocked acks, notification faults."""
        self.store.clear_faults()
        for sim in self.nodes.values():
            sim.notify_delay = 0.0
        self.log("sim", "faults stop")

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

    # -- scripted actions -------------------------------------------------------------
    def at(self, instant: float, action: Callable[[], object]) -> None:
        """Run ``action`` at virtual ``instant`` (a workload step or a fault)."""
        ident = f"a{next(self._seq)}"
        self._actions[ident] = action
        self._push(max(instant, self.now), ACTION, ident)

    # -- running -----------------------------------------------------------------
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

    def _to_true(self, sim: SimNode, local: float) -> float:
        if local == math.inf:
            return local
        return max(sim.clock.to_true(local), self.now)

    def _push(self, at: float, kind: int, key: str) -> None:
        heapq.heappush(self._queue, (at, next(self._seq), kind, key))

    def _schedule(self, key: str, at: float) -> None:
        sim = self.nodes[key]
        sim.wake = at
        if at < math.inf:
            self._push(at, TICK, key)

    # -- notifications ------------------------------------------------------------
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

    # -- invariants ---------------------------------------------------------------
    def claimable(self) -> dict[str, frozenset[int]]:
        """Every running node's claimable set at this instant, on its own clock."""
        out: dict[str, frozenset[int]] = {}
        for key, sim in self.nodes.items():
            if sim.crashed:
                continue
            tokens = sim.node.snapshot.claimable(self.local(sim))
            if tokens:
                out[key] = tokens
        return out

    def check_exclusive(self) -> None:
        """Invariant 1, recomputed in full: at most one node may claim any token now."""
        owner: dict[int, str] = {}
        for key, tokens in self.claimable().items():
            for token in tokens:
                other = owner.setdefault(token, key)
                if other != key:
                    raise InvariantViolation(
                        f"t={self.now:.3f}: token {token} claimable by {other} and {key}",
                        invariant=1,
                    )

    def log(self, name: str, what: str) -> None:
        self.history.append((self.now, name, what))

    def ready(self, names: Iterable[str] | None = None) -> bool:
        keys = names if names is not None else [k for k, s in self.nodes.items() if not s.crashed]
        return all(self.nodes[k].node.state is NodeState.ACTIVE for k in keys)

    def leader(self) -> SimNode | None:
        """The process whose incarnation the store counts as the oldest live node."""
        state = self.store.site_state(self.site)
        top = state.leader(self.clock()) if state is not None else None
        if top is None:
            return None
        for sim in self.nodes.values():
            if sim.running and sim.node.incarnation == top.incarnation:
                return sim
        return None


def _crashed(sim: SimNode) -> bool:
    return sim.crashed
