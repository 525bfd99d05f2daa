# Law: a scenario is a pure function of (seed, profile, overrides).  The seed
# picks the cluster's size and timings, then one script: a cold start, a
# chaos phase of workload steps and faults at seeded instants, "faults stop"
# (heal), recovery, then up to three *measured* graceful or crash events, and
# finally the backlog drained.  Safety invariants are checked at every event
# throughout (jobsync.sim.invariants); the time-bound ones are judged here,
# only once faults have stopped:
#   - recovery: every process that still runs is back at work (active,
#     nothing in flight, every satisfiable token claimable) within
#     ``recovery_bound`` of the heal (invariant 7: no node wedges);
#   - invariant 3: after a crash, every satisfiable token is claimable again
#     within heartbeat_timeout + 1 s; after a graceful leave, join or lock
#     change within 1 s; one heartbeat interval more when every node lost a
#     notification of it; BLIP_ALLOWANCE more when one node hit one transient
#     error (a transient error is retried after its backoff, never left to a
#     deadline or forgotten);
#   - invariant 2's liveness half: no task left undone, every effect applied
#     exactly once, and the audit agrees with the side-effect table;
#   - invariant 4 at rest: the claimable sets are a fixed point of the planner
#     (with ``loads``, balanced by measured load: every token owned, none stranded).
"""Seeded scenarios: what a run is, how it is generated, and running one."""

from __future__ import annotations

import functools
import hashlib
import random
import time
from collections import Counter

import attrs

from jobsync.core.defences import Defences
from jobsync.core.locks import resolve_locks
from jobsync.core.planner import plan
from jobsync.runtime.config import CoordinationConfig
from jobsync.sim.cluster import VirtualCluster
from jobsync.sim.errors import InvariantViolation
from jobsync.sim.faults import FAULTS, VERBS, WORKLOADS, Script
from jobsync.sim.workload import DATE, TaskBoard, UserLoop

GENERATOR = 2
"""Version of the draw from a seed: bump it whenever a change to this module or to
faults.py makes a seed produce a different scenario (recorded seeds then move)."""
PROFILES = ("ci", "soak", "big", "teeth")
BLIP_ALLOWANCE = 0.5
"""Extra seconds a measured event may take when one transient error hits one node: a
retry after its backoff (at most 0.6 x heartbeat interval before the first failure's
doubling caps it at 0.12 s), and the round it repeats."""
_WEIGHTS: dict[str, dict[str, int]] = {
    "default": {
        "join": 6, "leave": 6, "rolling": 3, "scale": 2, "pins": 5, "leader_churn": 3,
        "restart": 4, "duplicate": 2, "crash": 5, "pause": 5, "suspend": 2, "cut": 5,
        "outage": 2, "lose": 3, "delay": 2, "ack_block": 3, "blip": 4, "db_step": 3,
        "stall": 3, "targeted_stall": 2, "slow": 3, "consumer": 1, "giveup_duplicate": 2,
        "lost_reply": 3, "pause_in_tick": 3, "user_tx": 3, "sigterm": 2,
    },
    "teeth": {
        "join": 2, "leave": 2, "rolling": 1, "pins": 1, "leader_churn": 2, "restart": 2,
        "duplicate": 1, "crash": 3, "pause": 6, "suspend": 2, "cut": 8, "outage": 1,
        "lose": 1, "ack_block": 5, "db_step": 2, "stall": 3, "targeted_stall": 8, "slow": 2,
        "giveup_duplicate": 4, "lost_reply": 5, "pause_in_tick": 8, "user_tx": 5, "sigterm": 3,
    },
}  # fmt: skip


@attrs.frozen(kw_only=True)
class Spec:
    """Everything a run depends on besides the code: replayable from ``command``."""

    seed: int
    profile: str
    nodes: int
    tokens: int
    duration: float
    steps: int
    tasks: int
    interval: float
    timeout: float
    reconcile: float
    hash_function: str
    defences_off: tuple[str, ...] = ()
    """Safety defences switched off (the teeth tests); empty in every real run."""
    capacities: bool = False
    """Each node name gets a capacity (``capacity_of``).  Off by default, and drawn
    from a generator of its own, so every seed's scenario without it is unchanged."""

    def capacity_of(self, name: str) -> float:
        """The capacity of node ``name`` in this run: 1 unless ``capacities``."""
        if not self.capacities:
            return 1.0
        return random.Random(f"capacity:{self.seed}:{name}").choice((0.5, 1.0, 1.0, 2.0, 4.0))

    loads: bool = False
    """Tasks cost skewed amounts per token (``cost_of``, given to ``complete``) and the
    leader balances measured load.  Off by default, and drawn from a generator of its
    own, so every seed's scenario without it is unchanged."""

    def cost_of(self, token: int) -> float:
        """What a task on ``token`` costs in this run: Pareto-distributed (a few tokens
        carry most of the load), fixed per seed and token."""
        return random.Random(f"load:{self.seed}:{token}").paretovariate(1.1)

    @property
    def defences(self) -> Defences:
        return Defences.without(*self.defences_off)

    @property
    def config(self) -> CoordinationConfig:
        return CoordinationConfig(
            total_tokens=self.tokens,
            hash_function=self.hash_function,
            heartbeat_interval_sec=self.interval,
            heartbeat_timeout_sec=self.timeout,
            rebalance_check_interval_sec=self.reconcile,
            load_half_life_sec=4 * self.timeout if self.loads else None,
        )

    def command(self) -> str:
        return (
            f"python -m jobsync.sim --seed {self.seed} --profile {self.profile} "
            f"--nodes {self.nodes} --tokens {self.tokens} --steps {self.steps} "
            f"--duration {self.duration:g}"
            + "".join(f" --switch-off {name}" for name in self.defences_off)
            + (" --capacities" if self.capacities else "")
            + (" --loads" if self.loads else "")
        )


def make_spec(
    seed: int,
    profile: str = "ci",
    *,
    nodes: int | None = None,
    tokens: int | None = None,
    steps: int | None = None,
    duration: float | None = None,
    defences_off: tuple[str, ...] = (),
    capacities: bool = False,
    loads: bool = False,
) -> Spec:
    """The scenario of ``seed`` under ``profile``; explicit arguments override the draw."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    rng = random.Random(seed * 7919 + PROFILES.index(profile))
    big = profile == "big" or (profile == "soak" and rng.random() < 0.04)
    if big:
        n, t = 200, 10_000
    elif profile == "teeth":
        n, t = rng.randint(2, 6), rng.choice((8, 16, 32, 64))
    else:
        most = 20 if profile == "ci" else 60
        n = min(most, rng.choice((2, 3, 3, 4, 5, 6, 8, 10, 14, 20, 40)))
        t = rng.choice((4, 8, 16, 16, 64, 64, 100, 256, 1000, 1000 if profile == "ci" else 4096))
    interval = rng.choice((0.5, 1.0, 1.0, 1.0, 2.0, 5.0))
    timeout = interval * rng.choice((3.5, 4.0, 6.0))
    timeout = max(timeout, 2 * interval + max(0.5, 0.05 * timeout))
    n, t = nodes or n, tokens or t
    return Spec(
        seed=seed,
        profile=profile,
        nodes=n,
        tokens=t,
        duration=duration or round(timeout * rng.uniform(4.0, 10.0), 1),
        steps=steps if steps is not None else rng.randint(3, 8 if profile == "ci" else 20),
        # teeth: a long backlog, so claims are open whenever a fault lands
        tasks=400 if profile == "teeth" else min(2 * t, 1500 if big else 400),
        interval=interval,
        timeout=timeout,
        reconcile=rng.choice((5.0, 30.0)),
        hash_function=rng.choice(("xxh3", "xxh3", "xxh3", "md5")),
        defences_off=tuple(sorted(Defences.without(*defences_off).off())),
        capacities=capacities,
        loads=loads,
    )


@attrs.define
class Result:
    spec: Spec
    violation: InvariantViolation | None = None
    history: list[str] = attrs.Factory(list)
    mix: Counter[str] = attrs.Factory(Counter)
    events: int = 0
    virtual: float = 0.0
    wall: float = 0.0
    recovery: float = 0.0
    measured: list[tuple[str, float, float]] = attrs.Factory(list)
    plans_checked: int = 0
    fingerprint: str = ""
    """A digest of the run's end state and history: equal for equal seeds, on any host."""

    @property
    def ok(self) -> bool:
        return self.violation is None


class Runner:
    """One scenario on one cluster."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        cfg = spec.config
        self.board = TaskBoard(cfg.total_tokens, cfg.hash_function, spec.tasks)
        self.c = VirtualCluster(
            cfg,
            seed=spec.seed,
            board=self.board,
            defences=spec.defences,
            capacity=spec.capacity_of if spec.capacities else None,
            cost=spec.cost_of if spec.loads else None,
        )
        self.rng = random.Random(spec.seed * 104_729 + 1)
        self.script = Script(self.c, self.rng, max_nodes=max(2, spec.nodes * 3 // 2 + 2))
        self.script.nemesis = spec.profile == "teeth"
        self.result = Result(spec=spec)
        checker = self.c.checker
        assert checker is not None
        self.checker = checker

    def fail(self, invariant: int, message: str) -> None:
        raise InvariantViolation(f"t={self.c.now:.3f}: {message}", invariant=invariant)

    def run(self) -> Result:
        started = time.perf_counter()
        try:
            self._cold_start()
            self._chaos()
            self._recover()
            for _ in range(self.rng.randint(1, 3)):
                self._measured_event()
            self._balanced_at_rest()
            self._drain_backlog()
            self._audit()
        except InvariantViolation as exc:
            self.result.violation = exc
            self.result.history = [
                f"{t:14.3f}  {who:>12}  {what}" for t, who, what in self.c.history
            ]
        self.result.mix = self.script.mix
        self.result.events = self.c.events
        self.result.virtual = self.c.now - 1_000_000.0
        self.result.wall = time.perf_counter() - started
        self.result.plans_checked = self.checker.stats["plans_checked"]
        self.result.fingerprint = self._fingerprint()
        return self.result

    def _fingerprint(self) -> str:
        digest = hashlib.blake2b(digest_size=16)
        c = self.c
        digest.update(repr((c.events, round(c.now, 9), list(c.history))).encode())
        digest.update(
            repr(sorted((k, attrs.astuple(e)) for k, e in self.board.effects.items())).encode()
        )
        state = c.store.site_state(c.site)
        if state is not None:
            rows = state.tokens
            digest.update(repr((rows.owner, rows.incarnation, list(rows.epoch))).encode())
            digest.update(
                repr((state.generation, state.change_counter, state.sorted_nodes())).encode()
            )
        return digest.hexdigest()

    # -- phases ---------------------------------------------------------------------
    def _cold_start(self) -> None:
        cfg = self.spec.config
        for _ in range(self.spec.nodes):
            name = self.script.new_name()
            self.c.at(
                self.c.now + self.rng.uniform(0, cfg.heartbeat_interval_sec),
                functools.partial(self.script.start, name),
            )
        bound = 2 * cfg.settle_window + 4 * cfg.heartbeat_interval_sec + 2.0
        self.c.run_for(cfg.heartbeat_interval_sec)
        if not self.c.run_until(self.checker.converged, bound):
            self.fail(3, f"cold start of {self.spec.nodes} nodes not converged within {bound:g}s")

    def _chaos(self) -> None:
        spec = self.spec
        weights = _WEIGHTS["teeth" if spec.profile == "teeth" else "default"]
        kinds = [k for k in (*WORKLOADS, *FAULTS) if weights.get(k)]
        start = self.c.now
        for _ in range(spec.steps):
            kind = self.rng.choices(kinds, weights=[weights[k] for k in kinds])[0]
            at = start + self.rng.uniform(0, spec.duration)
            self.c.at(at, functools.partial(self.script.act, kind))
        self.c.run_until_time(start + spec.duration)

    def _recover(self) -> None:
        cfg = self.spec.config
        self.script.heal()
        paused = max((s.paused_until for s in self.c.nodes.values() if s.running), default=0.0)
        if paused > self.c.now:  # a pause is a fault too: faults stop when it ends
            self.c.run_until_time(paused)
        self.c.run_for(cfg.heartbeat_interval_sec)  # a resumed duplicate learns it lost
        if not self.script.running():  # every process stopped or was superseded
            self.script.start(self.script.new_name())
        healed_at = self.c.now
        bound = recovery_bound(cfg)
        beats = {id(s): s.node.stats["heartbeats"] for s in self.c.nodes.values()}

        def recovered() -> bool:  # and every process has reached the backend since
            return self.checker.converged() and all(
                s.node.stats["heartbeats"] > beats.get(id(s), -1) for s in self.c.live()
            )

        if not self.c.run_until(recovered, bound):
            self.fail(7, f"not back at work {bound:g}s after faults stopped: {self._states()}")
        self.result.recovery = self.c.now - healed_at
        expiry = self.script.lock_expiry - self.c.clock()
        if expiry > 0:  # let expiring pins lapse before measuring
            self.c.run_for(expiry + 0.01)
            if not self.c.run_until(self.checker.converged, recovery_bound(cfg)):
                self.fail(7, f"not quiescent after pins expired: {self._states()}")

    def _measured_event(self) -> None:
        cfg = self.spec.config
        c, rng = self.c, self.rng
        self.c.run_for(cfg.heartbeat_interval_sec * rng.uniform(0.0, 3.0))
        if not c.run_until(self.checker.converged, recovery_bound(cfg)):
            self.fail(7, f"not quiescent before a measured event: {self._states()}")
        running = self.script.running()
        kind = rng.choice(
            ("crash", "leave", "join", "pins") if len(running) > 1 else ("join", "pins")
        )
        lost = rng.random() < 0.3
        if lost:
            for sim in running:
                c.store.lose_notifications(sim.client, 1)
        blip = rng.choice(running) if rng.random() < 0.3 else None
        verb = rng.choice(VERBS)
        if blip is not None:  # one transient error must cost one retry, not a deadline
            c.store.fail_verb(blip.client, verb)
        bound = (
            (cfg.heartbeat_timeout_sec + 1.0 if kind == "crash" else 1.0)
            + (cfg.heartbeat_interval_sec if lost else 0.0)
            + (BLIP_ALLOWANCE if blip is not None else 0.0)
        )
        if kind == "crash":
            c.crash(self.script.pick(leader_bias=0.4).key)  # type: ignore[union-attr]
        elif kind == "leave":
            c.drain(self.script.pick(leader_bias=0.3).key)  # type: ignore[union-attr]
        elif kind == "join":
            self.script.start(self.script.new_name())
        else:
            specs = self.script.lock_specs(rng.randint(1, 4), expiring=False)
            self.script.admin.replace_locks(c.site, "admin", specs, rng.random() < 0.5)
        faults = (" (notifications lost)" if lost else "") + (
            f" (one transient {verb} error at {blip.key})" if blip is not None else ""
        )
        c.log("sim", f"measured {kind}{faults}, bound {bound:g}s")
        start = c.now
        if not c.run_until(self.checker.healed, bound):
            self.fail(3, f"{kind}: not healed within {bound:g}s: {self._states()}")
        self.result.measured.append((kind, c.now - start, bound))
        c.store.clear_faults()  # a loss not spent on this event must not hit the next one

    def _drain_backlog(self) -> None:
        """Pins cleared (so every task is doable), every task done within a bound."""
        cfg = self.spec.config
        self.script.admin.clear_locks(self.c.site, None)
        if not self.c.run_until(self.checker.converged, recovery_bound(cfg)):
            self.fail(7, f"not quiescent after pins were cleared: {self._states()}")
        for sim in self.c.nodes.values():
            if isinstance(sim.user, UserLoop):
                sim.user.quiet = True
                sim.user.batch = max(sim.user.batch, 25)
                sim.user.period = min(sim.user.period, 0.1)
        # A claim whose transaction outlived its own process's deregistration is
        # reaped by the leader's periodic reap: one reconciliation interval more.
        bound = (
            2 * cfg.heartbeat_timeout_sec
            + cfg.rebalance_check_interval_sec
            + self.spec.tasks * 0.02
            + 10.0
        )
        if not self.c.run_until(lambda: self.board.done, bound):
            undone = [k for keys in self.board.undone.values() for k in keys]
            self.fail(
                2,
                f"{len(undone)} tasks left undone {bound:g}s after faults stopped, e.g. "
                f"{undone[:3]}; open claims: {self._open_claims(undone[:3])}",
            )

    def _audit(self) -> None:
        c, board = self.c, self.board
        audit = {r.task_key: r for r in self.script.admin.read_audit(c.site, DATE)}
        for key, effect in board.effects.items():
            record = audit.get(key)
            if (
                record is None
                or record.status != "done"
                or record.incarnation != effect.incarnation
            ):
                self.fail(2, f"audit of {key} ({record}) disagrees with its side effect {effect}")
        if len(board.effects) != len(board.keys) or len(audit) != len(board.keys):
            self.fail(
                2, f"{len(board.keys)} tasks, {len(board.effects)} effects, {len(audit)} audited"
            )

    def _balanced_at_rest(self) -> None:
        """Invariants 4 and 5 on the claimable sets once quiescent."""
        c = self.c
        if not c.run_until(self.checker.converged, recovery_bound(self.spec.config)):
            self.fail(7, f"not quiescent after the measured events: {self._states()}")
        state = c.store.site_state(c.site)
        assert state is not None
        owners: list[str | None] = [None] * self.spec.tokens
        for key, tokens in c.claimable().items():
            for t in tokens:
                owners[t] = c.nodes[key].name
        names = sorted(s.name for s in c.nodes.values() if s.running)
        pins = resolve_locks(state.locks.visible(c.clock()), c.clock()).pins
        rest = plan(
            self.spec.tokens, owners, names, pins, {n: self.spec.capacity_of(n) for n in names}
        )
        if rest.moved and not self.spec.loads:  # balanced by measured load, not by count
            self.fail(
                4, f"claimable sets at rest are not balanced: the planner would move {rest.moved}"
            )
        if any(owners[t] is not None for t in rest.unowned):
            self.fail(5, "an unsatisfiable pinned token is claimable")

    # -- reporting ---------------------------------------------------------------------
    def _states(self) -> str:
        parts = []
        for sim in self.c.nodes.values():
            if sim.crashed:
                continue
            node = sim.node
            parts.append(
                f"{sim.key}:{node.state.value}/inc{node.incarnation}"
                f"{'/leader' if node.is_leader else ''}/{len(node.snapshot.tokens)}t"
                f"{'/paused' if sim.paused_until > self.c.now else ''}"
            )
        state = self.c.store.site_state(self.c.site)
        extra = ""
        if state is not None:
            extra = (
                f"; pending {len(state.tokens.pending)}, coverage {self.checker.coverage()}/"
                f"{self.checker.satisfiable()}, counter {state.change_counter} "
                f"basis {state.plan_basis}"
            )
        return " ".join(parts) + extra

    def _open_claims(self, keys: list[str]) -> list[str]:
        records = self.script.admin.read_audit(self.c.site, DATE)
        return [f"{r.task_key}@{r.node}/inc{r.incarnation}" for r in records if r.task_key in keys]


def recovery_bound(cfg: CoordinationConfig) -> float:
    """How long after faults stop every node must be back at work: a lease to run out,
    an eviction (ack deadline, then the evicted lease), the settle window, slack."""
    return (
        2 * cfg.heartbeat_timeout_sec
        + cfg.ack_timeout
        + cfg.settle_window
        + 4 * cfg.heartbeat_interval_sec
        + 2.0
    )


def run_scenario(spec: Spec) -> Result:
    return Runner(spec).run()


def run_seed(seed: int, profile: str = "ci") -> Result:
    return run_scenario(make_spec(seed, profile))
