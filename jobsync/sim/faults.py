# Law: every workload step and fault is drawn from the run's one seeded RNG
# and applied through the cluster's public verbs, and every fault is bounded:
# it ends by its own scheduled undo or, at the latest, when ``heal`` ends all
# faults ("faults stop").  After heal, fault actions still in the queue do
# nothing, and restarts still pending happen at once, so what follows is a
# cluster with no faults at all.  Clock faults stay within the assumptions of
# docs/PROTOCOL.md section 5: local clocks drift by at most ``DRIFT_SHARE`` of the
# margin over a timeout and only jump forward; the database clock's offset
# stays within +-``DB_SHARE`` of the margin, so no step exceeds it.
"""The catalogue of workloads and faults a scenario draws from."""

from __future__ import annotations

import functools
import random
from collections import Counter
from collections.abc import Callable

from jobsync.backends.base import LockSpec, PlanCommit
from jobsync.core.errors import JobSyncError
from jobsync.core.hashing import token_for
from jobsync.sim.cluster import CONSUMERS, LocalClock, SimNode, VirtualCluster

DRIFT_SHARE = 0.2
DB_SHARE = 0.35
WORKLOADS = (
    "join",
    "leave",
    "rolling",
    "scale",
    "pins",
    "leader_churn",
    "restart",
    "duplicate",
    "giveup_duplicate",
)
FAULTS = (
    "crash",
    "pause",
    "suspend",
    "cut",
    "outage",
    "lose",
    "delay",
    "ack_block",
    "blip",
    "db_step",
    "stall",
    "targeted_stall",
    "slow",
    "consumer",
    "lost_reply",
    "pause_in_tick",
    "user_tx",
    "sigterm",
)
VERBS = (
    "heartbeat",
    "read_nodes",
    "read_owned",
    "ack_releases",
    "read_cluster",
    "evict_overdue",
    "reap_claims",
    "commit_plan",
    "mark_leaving",
    "deregister",
    "register",
)
"""Node verbs a targeted transient failure may hit."""
WRITE_VERBS = (
    "register",
    "heartbeat",
    "mark_leaving",
    "deregister",
    "commit_plan",
    "ack_releases",
    "evict_overdue",
    "reap_claims",
    "claim",
    "complete",
    "release",
)
"""Verbs whose reply may be lost after they committed."""
LEADER_VERBS = ("read_cluster", "evict_overdue", "reap_claims", "commit_plan")
"""What a leader's pass calls between its read and its write: where a pause hurts most."""
PATTERNS = (
    ("gpu-%",),
    ("cpu-%",),
    ("cpu-00_",),
    ("nomatch-%",),
    ("tpu-%", "gpu-%"),
    ("gpu-%", "cpu-%"),
    ("%",),
    ("cpu-0_1", "gpu-0__"),
)


class _Base:
    """The script's state and the helpers every action uses."""

    def __init__(self, cluster: VirtualCluster, rng: random.Random, max_nodes: int) -> None:
        self.c = cluster
        self.rng = rng
        self.max_nodes = max_nodes
        self.healed = False
        self.mix: Counter[str] = Counter()
        self.admin = cluster.store.connect("admin")
        self.stalls_armed = 0
        self.targeted_armed = 0
        self.lock_expiry = 0.0
        self.lost_notification = False
        self.nemesis = False
        """Aim faults at the worst moments (the teeth profile)."""
        self._names = 0
        self._restarts: list[str] = []
        cfg = cluster.config
        self.drift = min(0.01, DRIFT_SHARE * cfg.margin / cfg.heartbeat_timeout_sec)
        self.db_bound = DB_SHARE * cfg.margin

    def new_name(self) -> str:
        self._names += 1
        group = "gpu" if self.rng.random() < 0.25 else "cpu"
        return f"{group}-{self._names:03d}"

    def start(self, name: str) -> SimNode:
        rng = self.rng
        clock = LocalClock(
            offset=rng.uniform(-1000.0, 1000.0), rate=1.0 + rng.uniform(-self.drift, self.drift)
        )
        consumer = rng.choices(CONSUMERS, weights=(8, 1, 1))[0]
        return self.c.spawn(name, clock=clock, consumer=consumer)

    def running(self) -> list[SimNode]:
        return [s for s in self.c.nodes.values() if s.running and not s.leaving]

    def pick(self, spare: int = 1, leader_bias: float = 0.2) -> SimNode | None:
        """A running node, keeping at least ``spare`` others running."""
        pool = self.running()
        if len(pool) <= spare:
            return None
        leader = self.c.leader()
        if leader is not None and leader in pool and self.rng.random() < leader_bias:
            return leader
        return self.rng.choice(pool)

    def later(self, seconds: float, action: Callable[[], None], *, fault: bool = True) -> None:
        """Run ``action`` after ``seconds`` unless faults have stopped by then."""

        def guarded() -> None:
            if not (fault and self.healed):
                action()

        self.c.at(self.c.now + seconds, guarded)

    def _span(self, low: float, high: float) -> float:
        return self.c.config.heartbeat_timeout_sec * self.rng.uniform(low, high)

    def _end_outage(self) -> None:
        self.c.store.restore_all()
        self.c.log("db", "outage ends")

    def _join(self) -> bool:
        if len(self.running()) >= self.max_nodes:
            return False
        self.start(self.new_name())
        return True

    def _restart_later(self, name: str) -> None:
        self._restarts.append(name)
        delay = self.rng.uniform(0.0, 1.5 * self.c.config.heartbeat_timeout_sec)

        def restart() -> None:
            if name in self._restarts:
                self._restarts.remove(name)
                self.start(name)

        self.later(delay, restart, fault=False)


class _Workloads(_Base):
    """What users do: joins, leaves, deploys, scaling, pins, restarts, duplicates."""

    def _leave(self) -> bool:
        sim = self.pick()
        if sim is None:
            return False
        self.c.drain(sim.key, release=self.rng.random() < 0.3)
        return True

    def _rolling(self) -> bool:
        old = self.running()
        if not old:
            return False
        count = min(len(old), self.rng.randint(1, 4))
        gap = self.c.config.heartbeat_interval_sec * self.rng.uniform(0.2, 3.0)
        for i, sim in enumerate(self.rng.sample(old, count)):
            name = self.new_name()
            self.later(i * gap, functools.partial(self._start_quiet, name), fault=False)
            self.later(
                i * gap + gap / 2, functools.partial(self._drain_quiet, sim.key), fault=False
            )
        return True

    def _start_quiet(self, name: str) -> None:
        if len(self.running()) < self.max_nodes:
            self.start(name)

    def _drain_quiet(self, key: str) -> None:
        sim = self.c.nodes.get(key)
        if sim is not None and sim.running and not sim.leaving and len(self.running()) > 1:
            self.c.drain(key)

    def _scale(self) -> bool:
        count = self.rng.randint(2, 5)
        if self.rng.random() < 0.5:
            for _ in range(count):
                self._start_quiet(self.new_name())
        else:
            for _ in range(count):
                sim = self.pick()
                if sim is not None:
                    self.c.drain(sim.key)
        return True

    def _pins(self) -> bool:
        rng = self.rng
        try:
            if rng.random() < 0.2:
                self.admin.clear_locks(self.c.site, None)
            else:
                specs = self.lock_specs(rng.randint(1, 8), expiring=rng.random() < 0.5)
                self.admin.replace_locks(self.c.site, "admin", specs, rng.random() < 0.5)
        except JobSyncError:
            return False
        return True

    def lock_specs(self, count: int, *, expiring: bool) -> list[LockSpec]:
        cfg = self.c.config
        specs = []
        for i in self.rng.sample(range(10_000), count):
            key = f"pinned-{i}"
            expires = self.rng.uniform(1.0, 30.0) if expiring else None
            if expires is not None:
                self.lock_expiry = max(self.lock_expiry, self.c.clock() + expires)
            specs.append(
                LockSpec(
                    task_key=key,
                    token=token_for(key, cfg.total_tokens, cfg.hash_function),
                    patterns=self.rng.choice(PATTERNS),
                    expires_in=expires,
                )
            )
        return specs

    def _leader_churn(self) -> bool:
        leader = self.c.leader()
        if leader is None or len(self.running()) < 2:
            return False
        if self.rng.random() < 0.5:
            self.c.drain(leader.key)
        else:
            self.c.crash(leader.key)
            self._restart_later(leader.name)
        return True

    def _restart(self) -> bool:
        sim = self.pick()
        if sim is None:
            return False
        self.c.crash(sim.key)
        self._restart_later(sim.name)
        return True

    def _duplicate(self) -> bool:
        sim = self.pick(spare=0)
        if sim is None:
            return False
        self.start(sim.name)  # a second process with the same name
        return True

    def _giveup_duplicate(self) -> bool:
        """A second process takes a name over and gives up soon after (a failed enter,
        Ctrl-C, a drain timeout), often while the original is cut off and still inside
        its lease: leaving must not hand the original's tokens on."""
        sim = self.pick(spare=0, leader_bias=0.3)
        if sim is None:
            return False
        if self.rng.random() < 0.7:
            self.c.cut_off(sim.key)
            self.later(self._span(0.5, 2.5), lambda: self.c.restore(sim.key))
        duplicate = self.start(sim.name)
        wait = self.c.config.heartbeat_interval_sec * self.rng.uniform(0.05, 1.5)
        self.later(wait, lambda: self.c.give_up(duplicate.key), fault=False)
        return True


class _Faults(_Base):
    """What goes wrong, and the commit nemesis that aims it at the worst moment."""

    def _lost_reply(self) -> bool:
        sim = self.pick(spare=0, leader_bias=0.3)
        if sim is None:
            return False
        key = (sim.client, self.rng.choice(WRITE_VERBS))
        self.c.store.lose_reply[key] = self.c.store.lose_reply.get(key, 0) + 1
        return True

    def _pause_in_tick(self) -> bool:
        """Stop the process right before a verb, inside it (holding its locks) or right
        after its commit, before it reads the answer."""
        sim = self.pick(spare=0, leader_bias=0.5)
        if sim is None:
            return False
        seconds = self._span(0.05, 1.5)
        if sim is self.c.leader() and self.rng.random() < 0.5:
            # whoever leads when it happens stops right before a leader-only step
            self.c.store.slow_any[self.rng.choice(LEADER_VERBS)] = seconds
            return True
        verbs = LEADER_VERBS if sim is self.c.leader() else VERBS
        key = (sim.client, self.rng.choice(verbs))
        where = self.rng.choice(("before", "inside", "after"))
        store = self.c.store
        {"before": store.slow_verbs, "inside": store.pause_inside, "after": store.pause_after}[
            where
        ][key] = seconds
        return True

    def _user_tx(self) -> bool:
        """The user's next completion runs in its own transaction, held open."""
        sim = self.pick(spare=0)
        if sim is None or not hasattr(sim.user, "hold_next"):
            return False
        sim.user.hold_next = (self._span(0.2, 3.0), self.rng.random() < 0.3)  # type: ignore[union-attr]
        return True

    def _sigterm(self) -> bool:
        """SIGTERM at any moment; sometimes during a database outage longer than the drain."""
        sim = self.pick(spare=1)
        if sim is None:
            return False
        if self.rng.random() < 0.4:
            cfg = self.c.config
            self.c.store.cut_off_all()
            self.c.log("db", "outage")
            self.later((cfg.drain_timeout_sec + 1.0) * self.rng.uniform(1.0, 2.0), self._end_outage)
        self.c.sigterm(sim.key)
        return True

    def _crash(self) -> bool:
        sim = self.pick(leader_bias=0.3)
        if sim is None:
            return False
        self.c.crash(sim.key)
        if self.nemesis and self.rng.random() < 0.5:
            # The reap this death makes due: its leader pauses inside it.
            self.c.store.pause_inside_any["reap_claims"] = self._span(0.5, 1.5)
        if self.rng.random() < 0.5:
            self._restart_later(sim.name)
        return True

    def _pause(self) -> bool:
        sim = self.pick(spare=0)
        if sim is None:
            return False
        self.c.pause(sim.key, self._span(0.05, 3.0))
        return True

    def _suspend(self) -> bool:
        sim = self.pick(spare=0)
        if sim is None:
            return False
        seconds = self._span(0.1, 2.0)
        self.c.suspend(sim.key, seconds, jump=seconds * self.rng.uniform(1.0, 1.5))
        return True

    def _cut(self) -> bool:
        sim = self.pick(spare=0)
        if sim is None:
            return False
        self.c.cut_off(sim.key)
        self.later(self._span(0.1, 3.0), lambda: self.c.restore(sim.key))
        return True

    def _outage(self) -> bool:
        self.c.store.cut_off_all()
        self.c.log("db", "outage")
        self.later(self._span(0.1, 2.5), self._end_outage)
        return True

    def _lose(self) -> bool:
        targets = self.running() if self.rng.random() < 0.3 else [self.pick(spare=0)]
        for sim in targets:
            if sim is not None:
                self.c.store.lose_notifications(sim.client, self.rng.randint(1, 3))
        return bool(targets)

    def _delay(self) -> bool:
        sim = self.pick(spare=0)
        if sim is None:
            return False
        self.c.delay_notifications(
            sim.key, self.c.config.heartbeat_interval_sec * 2 * self.rng.random()
        )
        self.later(self._span(0.2, 3.0), lambda: self.c.delay_notifications(sim.key, 0.0))
        return True

    def _ack_block(self) -> bool:
        sim = self.pick(spare=0)
        if sim is None:
            return False
        self.c.block_acks(sim.key)
        if self.rng.random() < 0.6:  # otherwise it never acknowledges until faults stop
            ack = self.c.config.ack_timeout
            self.later(ack * self.rng.uniform(0.2, 3.0), lambda: self.c.unblock_acks(sim.key))
        if self.nemesis:
            # The eviction this makes due is where a leader's pause hurts: its lease may
            # end between its read and the eviction.  A join makes a release to miss.
            self.c.store.slow_any["evict_overdue"] = self._span(0.5, 1.5)
            if self.rng.random() < 0.5:
                self._join()
        return True

    def _blip(self) -> bool:
        sim = self.pick(spare=0)
        if sim is None:
            return False
        if self.rng.random() < 0.5:
            self.c.store.fail_next(sim.client, self.rng.randint(1, 4))
        else:
            self.c.store.fail_verb(sim.client, self.rng.choice(VERBS), self.rng.randint(1, 2))
        return True

    def _db_step(self) -> bool:
        target = self.rng.uniform(-self.db_bound, self.db_bound)
        self.c.step_db_clock(target - self.c.clock.db_offset)
        return True

    def _slow(self) -> bool:
        sim = self.pick(spare=0)
        if sim is None:
            return False
        verb = self.rng.choice(("heartbeat", "heartbeat", "read_owned", "ack_releases", "register"))
        self.c.store.slow_verbs[sim.client, verb] = self._span(0.02, 0.9)
        return True

    def _stall(self) -> bool:
        self.stalls_armed += 1
        return True

    def _targeted_stall(self) -> bool:
        self.targeted_armed += 1
        return True

    def _consumer(self) -> bool:
        sim = self.pick(spare=0)
        if sim is None:
            return False
        sim.consumer = self.rng.choice(CONSUMERS)
        return True

    def _on_commit(self, client: str, commit: PlanCommit) -> None:
        """Stall a plan between its read and its commit; the targeted kind also ends the
        partition or pause of a holder the plan takes tokens from, and steps the database
        clock back as far as the margin allows, so the holder's late heartbeat lands in
        the window the commit-time expiry re-check exists for."""
        if self.healed:
            return
        troubled = self._holders_in_trouble(commit) if self.targeted_armed else []
        if troubled:
            self.targeted_armed -= 1
            self.mix["targeted_stall_fired"] += 1
            for sim in troubled:
                self.c.restore(sim.key)
                self.c.resume(sim.key)
            self.c.step_db_clock(-self.db_bound - self.c.clock.db_offset)
            self.c.stall(client, self.c.config.heartbeat_interval_sec * self.rng.uniform(0.6, 1.5))
        elif self.stalls_armed:
            self.stalls_armed -= 1
            self.c.stall(client, self._span(0.01, 0.8))

    def _holders_in_trouble(self, commit: PlanCommit) -> list[SimNode]:
        found = []
        for assign in commit.assigns:
            for sim in self.c.nodes.values():
                if (
                    sim.running
                    and sim.node.incarnation == assign.expected_incarnation
                    and (self.c.store.unreachable(sim.client) or sim.paused_until > self.c.now)
                    and sim not in found
                ):
                    found.append(sim)
        return found


class Script(_Workloads, _Faults):
    """Applies named actions to a cluster; counts what it did (the fault mix)."""

    def __init__(self, cluster: VirtualCluster, rng: random.Random, max_nodes: int) -> None:
        super().__init__(cluster, rng, max_nodes)
        cluster.commit_hooks.append(self._on_commit)

    def act(self, kind: str) -> None:
        if self.healed and kind in FAULTS:
            return
        action: Callable[[], bool] = getattr(self, f"_{kind}")
        if action():
            self.mix[kind] += 1

    def heal(self) -> None:
        self.healed = True
        self.stalls_armed = self.targeted_armed = 0
        self.c.heal()
        restarts, self._restarts = self._restarts, []
        for name in restarts:
            self.start(name)
        if not self.running():  # the script may have stopped or superseded every process
            self.start(self.new_name())
