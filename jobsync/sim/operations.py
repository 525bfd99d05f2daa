"""The workloads a scenario draws from: what the people running a cluster do to it
(joins, leaves, rolling deploys, scaling, pins, leader churn, restarts, duplicates)."""

from __future__ import annotations

import functools

from jobsync.backends.base import LockSpec
from jobsync.core.errors import JobSyncError
from jobsync.core.hashing import token_for
from jobsync.sim.cluster import SimNode
from jobsync.sim.scriptbase import ScriptBase, on_a_node

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


class Operations(ScriptBase):
    """What users do: joins, leaves, deploys, scaling, pins, restarts, duplicates."""

    @on_a_node()
    def _leave(self, sim: SimNode) -> None:
        self.c.drain(sim.key, release=self.rng.random() < 0.3)

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

    @on_a_node()
    def _restart(self, sim: SimNode) -> None:
        self.c.crash(sim.key)
        self._restart_later(sim.name)

    @on_a_node(spare=0)
    def _duplicate(self, sim: SimNode) -> None:
        self.start(sim.name)  # a second process with the same name

    @on_a_node(spare=0, leader_bias=0.3)
    def _giveup_duplicate(self, sim: SimNode) -> None:
        """A second process takes a name over and gives up soon after (a failed enter,
        Ctrl-C, a drain timeout), often while the original is cut off and still inside
        its lease: leaving must not hand the original's tokens on."""
        if self.rng.random() < 0.7:
            self.c.cut_off(sim.key)
            self.later(self._span(0.5, 2.5), lambda: self.c.restore(sim.key))
        duplicate = self.start(sim.name)
        wait = self.c.config.heartbeat_interval_sec * self.rng.uniform(0.05, 1.5)
        self.later(wait, lambda: self.c.give_up(duplicate.key), fault=False)
