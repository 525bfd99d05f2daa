"""What every scripted action shares: the script's state (the run's one RNG, the mix it
counts, what is armed), how it names, starts, picks and restarts processes, and
``on_a_node``, the form of an action on one running node.  The clock bounds
(``DRIFT_SHARE``, ``DB_SHARE``) are the law stated at the top of ``faults.py``."""

from __future__ import annotations

import functools
import random
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

from jobsync.sim.cluster import CONSUMERS, LocalClock, SimNode, VirtualCluster

DRIFT_SHARE = 0.2
DB_SHARE = 0.35


class ScriptBase:
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

    def _database_outage(self, seconds: float) -> None:
        """Cut every client off the database for ``seconds`` (a fault: heal ends it)."""
        self.c.store.cut_off_all()
        self.c.log("db", "outage")
        self.later(seconds, self._end_outage)

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


_Script = TypeVar("_Script", bound=ScriptBase)


def on_a_node(
    *, spare: int = 1, leader_bias: float = 0.2
) -> Callable[[Callable[[_Script, SimNode], None]], Callable[[_Script], bool]]:
    """Make ``body(script, node)`` an action on the node ``pick(spare, leader_bias)``
    draws; the action answers whether it was taken (not when no node may be spared)."""

    def action_on(body: Callable[[_Script, SimNode], None]) -> Callable[[_Script], bool]:
        @functools.wraps(body)
        def action(script: _Script) -> bool:
            sim = script.pick(spare=spare, leader_bias=leader_bias)
            if sim is None:
                return False
            body(script, sim)
            return True

        return action

    return action_on
