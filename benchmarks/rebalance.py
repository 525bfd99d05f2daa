"""Rebalance benchmark: jobsync's explicit table against classic hashing schemes.

Run ``python -m benchmarks.rebalance`` (about 40 s on two idle cores),
``--quick`` for a few seconds, ``--json PATH`` for machine-readable rows and
``--plot PATH`` for a PNG (needs matplotlib: ``pip install 'jobsync[bench]'``).

What is measured (the planner's laws: docs/PROTOCOL.md section 3):

- Scenarios, each a sequence of membership changes applied to a starting
  cluster of N nodes holding T tokens:

  - ``initial``: the first distribution over N nodes (nobody owns anything).
  - ``join``: one node joins.
  - ``leave``: a random member leaves gracefully.  jobsync sees its tokens
    already released (owner None); for hashing schemes leave and crash are
    the same thing.
  - ``crash``: the same member dies: jobsync sees its tokens still owned by
    a dead name (orphans).
  - ``burst``: k = max(2, N // 10) random members (at most N - 1) crash at
    once, in one rebalance.
  - ``rolling``: a rolling deploy.  Every node, oldest first, is replaced by
    a new name (old out and new in within one rebalance); moves are summed
    over the N steps, and so are the lower bounds.
  - ``pinned-*``: 10 ``gpu-*`` nodes, max(2, N // 10) ``eu-*`` nodes, the
    rest ``cpu-*``.  10% of the tokens are locked to ``['gpu-%']``, 5% to
    ``['gpu-%', 'cpu-%']`` (fallback), 5% to ``['eu-%']``.  ``pinned-initial``,
    ``pinned-join`` (a cpu node joins), ``pinned-crash`` (a random gpu node
    dies), ``pinned-gpu-outage`` (all gpu nodes die: the ``['gpu-%']``
    tokens become unowned, the fallback tokens go to cpu nodes) and
    ``pinned-messy`` (jobsync only: a random, unbalanced, pin-violating
    start, then 5 random members die: a stress case for the pinned planner).

- Jump (``jump``) removes only its last buckets, as the algorithm requires,
  so in leave, crash and burst its victims are the newest members instead of
  random ones, and in ``rolling`` it hands each freed bucket number to the
  replacement.  ``jump-middle`` is Jump used without that discipline: a
  leaving member is cut out and the buckets after it renumbered.  Its cost
  depends on the victim's position, so in leave and crash it removes the
  middle member of the arrival order (about half of all keys move); in burst
  it removes the same random members as everyone else; in ``rolling`` the
  oldest member goes first, so every bucket shifts: about T moves a step.

- Columns: ``moved`` (tokens whose owner changed to a node, summed over the
  steps), ``LB`` (the fewest moves any *balanced* plan can make, for the
  same changes; the same number for every algorithm in a scenario row
  group; for ``jump`` and ``jump-middle`` it is computed for their own
  victims), ``forced`` (tokens this algorithm had to move whatever it did:
  those of its own dead or departed owners, and for jobsync also tokens on a
  node their pin no longer allows), ``max/avg``, ``min/avg`` and ``max-min``
  of the final loads over the live nodes, planning time (median of several
  runs with min and max, ``xruns``; for ``rolling``, the median and range
  over the steps), pin violations and, for jobsync, which independent check
  confirmed its numbers (``closed form``, ``flow``, ``relaxed``; any
  disagreement prints ``PLANNER CHECK FAILED`` on stderr, shows
  ``MISMATCH`` and makes the exit status 1).

- The lower bound applies to balanced outcomes: a hashing scheme can move
  fewer tokens than ``LB`` on a join (its newcomer is under-filled) or on a
  leave (its victim held fewer than a balanced share).

- Lower bounds: unpinned ones come from the movement law (``orphans + sum of
  max(0, held - target)`` with the "+1" slots on the nodes holding the
  most), computed independently of the planner and compared with the
  planner's ``lower_bound`` and its ``moved``.  For pinned scenarios the
  planner's own ``lower_bound`` is used; it is cross-checked against an
  independent min-cost flow (convex balance costs first, one per move
  second; these checks live in tests/support/planner_oracle.py, shared with
  the planner's tests) when the cluster is small enough (``check`` column:
  ``flow``), else only against the tokens that must move (``relaxed``).

- Hashing schemes do not support pins: on the pinned scenarios they are
  applied naively (ignoring the locks) and their pin violations are counted
  (``viol``: tokens on a node their lock does not allow, or owned although
  no live node satisfies the lock).

- Planning time for hashing schemes is the time to compute the whole token
  map for the new membership (for Maglev including the table build); HRW is
  updated incrementally, with the same result as recomputing it.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

from benchmarks._common import repo_on_path, timed
from benchmarks.alternatives import Scheme, State, default_schemes, token_keys
from jobsync.core.planner import Plan, lower_bound_moves, plan

repo_on_path()
# The independent checks of the planner live with its tests (see that module's docstring).
from tests.support.planner_oracle import (  # noqa: E402
    balanced_lower_bound,
    eligibility,
    exact_pinned,
    must_move,
    pin_violations,
)

Owners = list[str | None]
Locks = dict[int, tuple[str, ...]]

JOBSYNC = "jobsync"
SCENARIOS = (
    "initial",
    "join",
    "leave",
    "crash",
    "burst",
    "rolling",
    "pinned-initial",
    "pinned-join",
    "pinned-crash",
    "pinned-gpu-outage",
    "pinned-messy",
)
#: Rendezvous costs T * N hash evaluations for a fresh map; above this the
#: scheme is skipped (pure Python does about 17 million a second).
HRW_MAX_PAIRS = 20_000_000


# --------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class Config:
    seed: int
    grid: tuple[tuple[int, int], ...]  # (T, N) for initial/join/leave/crash/burst
    rolling: tuple[tuple[int, int], ...]
    pinned: tuple[tuple[int, int], ...]
    runs: int  # jobsync timing runs (all of them are done)
    alt_runs: int  # at most this many timing runs for a hashing scheme...
    alt_budget_s: float  # ...stopping once this much time was spent


def default_config(seed: int) -> Config:
    grid = (
        (1_000, 2),
        (1_000, 10),
        (1_000, 100),
        (1_000, 1_000),
        (10_000, 2),
        (10_000, 10),
        (10_000, 100),
        (10_000, 1_000),
        (100_000, 10),
        (100_000, 100),
        (100_000, 1_000),
    )
    return Config(
        seed=seed,
        grid=grid,
        rolling=((1_000, 10), (10_000, 10), (10_000, 100)),
        pinned=((1_000, 100), (10_000, 100), (10_000, 200), (10_000, 1_000)),
        runs=5,
        alt_runs=5,
        alt_budget_s=0.02,
    )


def quick_config(seed: int) -> Config:
    return Config(
        seed=seed,
        grid=((1_000, 10), (1_000, 100), (10_000, 10), (10_000, 100)),
        rolling=((1_000, 10),),
        pinned=((1_000, 100),),
        runs=3,
        alt_runs=3,
        alt_budget_s=0.01,
    )


# --------------------------------------------------------------------------
# scenarios


@dataclass(frozen=True)
class Step:
    """One rebalance: the live membership afterwards, in arrival order."""

    nodes: tuple[str, ...]
    #: Members that left gracefully: jobsync sees their tokens released.
    released: frozenset[str] = frozenset()


@dataclass
class Scenario:
    name: str
    total_tokens: int
    base: tuple[str, ...]
    steps: list[Step]
    #: The same change for schemes that can only remove their newest members.
    steps_end: list[Step]
    #: ...and for ``jump-middle``, whose cost depends on the victim's position:
    #: the middle member of the arrival order leaves (None: same as ``steps``).
    steps_middle: list[Step] | None = None
    locks: Locks | None = None
    from_empty: bool = False
    #: jobsync's starting owners when not its own balanced plan (``pinned-messy``).
    start: Owners | None = None
    #: Only jobsync runs it (hashing schemes have no "messy" state to start from).
    jobsync_only: bool = False
    note: str = ""

    @property
    def pinned(self) -> bool:
        return self.locks is not None


def _rng(seed: int, *parts: object) -> random.Random:
    return random.Random(":".join(str(p) for p in (seed, *parts)))


def _names(rng: random.Random, prefix: str, count: int, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < count:
        name = f"{prefix}-{rng.getrandbits(32):08x}"
        if name not in taken:
            taken.add(name)
            out.append(name)
    return out


def _without(nodes: Sequence[str], gone: Iterable[str]) -> tuple[str, ...]:
    drop = set(gone)
    return tuple(n for n in nodes if n not in drop)


def burst_size(n: int) -> int:
    return min(n - 1, max(2, n // 10))


def unpinned_scenarios(seed: int, total: int, n: int, rolling: bool) -> list[Scenario]:
    """initial, join, leave, crash, burst (and rolling) for T=total, N=n."""
    rng = _rng(seed, "nodes", n)  # the same names for every T
    taken: set[str] = set()
    base = tuple(_names(rng, "w", n, taken))
    newcomer = _names(rng, "w", 1, taken)[0]
    out = [
        Scenario("initial", total, base, [Step(base)], [Step(base)], from_empty=True),
        Scenario("join", total, base, [Step((*base, newcomer))], [Step((*base, newcomer))]),
    ]
    if n >= 2:
        victim = rng.choice(base)
        last, middle = base[-1], base[n // 2]
        for name, graceful in (("leave", True), ("crash", False)):

            def step(v: str, graceful: bool = graceful) -> list[Step]:
                return [Step(_without(base, [v]), frozenset([v] if graceful else []))]

            out.append(
                Scenario(name, total, base, step(victim), step(last), steps_middle=step(middle))
            )
        k = burst_size(n)
        victims = rng.sample(base, k)
        out.append(
            Scenario(
                "burst",
                total,
                base,
                [Step(_without(base, victims))],
                [Step(base[: n - k])],
                note=f"k={k}",
            )
        )
    if rolling:
        replacements = _names(rng, "w", n, taken)
        steps: list[Step] = []
        live = list(base)
        for old, new in zip(base, replacements, strict=True):
            live.remove(old)
            live.append(new)
            steps.append(Step(tuple(live)))
        out.append(Scenario("rolling", total, base, steps, steps, note=f"{n} steps"))
    return out


def pinned_locks(seed: int, total: int) -> Locks:
    """10% ['gpu-%'], 5% ['gpu-%', 'cpu-%'], 5% ['eu-%'] of the tokens, at random."""
    rng = _rng(seed, "locks", total)
    tokens = list(range(total))
    rng.shuffle(tokens)
    gpu, fallback, eu = total // 10, total // 20, total // 20
    locks: Locks = {}
    for t in tokens[:gpu]:
        locks[t] = ("gpu-%",)
    for t in tokens[gpu : gpu + fallback]:
        locks[t] = ("gpu-%", "cpu-%")
    for t in tokens[gpu + fallback : gpu + fallback + eu]:
        locks[t] = ("eu-%",)
    return locks


def pinned_scenarios(seed: int, total: int, n: int) -> list[Scenario]:
    if n < 14:
        raise ValueError("pinned scenarios need at least 14 nodes (10 gpu, 2 eu, 2 cpu)")
    rng = _rng(seed, "pinned-nodes", n)
    taken: set[str] = set()
    eu_count = max(2, n // 10)
    cpu = _names(rng, "cpu", n - 10 - eu_count, taken)
    eu = _names(rng, "eu", eu_count, taken)
    gpu = _names(rng, "gpu", 10, taken)
    base = (*cpu, *eu, *gpu)  # arrival order: the gpu nodes are the newest
    locks = pinned_locks(seed, total)
    joiner = _names(rng, "cpu", 1, taken)[0]
    victim = rng.choice(gpu)
    join = [Step((*base, joiner))]
    crash = [Step(_without(base, [victim]))]
    outage = [Step(_without(base, gpu))]
    # The pinned planner's stress case: a random (unbalanced, pin-violating)
    # assignment, then 5 members die.
    dead = 5
    messy = [Step(_without(base, rng.sample(base, dead)))]
    start: Owners = [rng.choice(base) for _ in range(total)]
    return [
        Scenario(
            "pinned-initial", total, base, [Step(base)], [Step(base)], locks=locks, from_empty=True
        ),
        Scenario("pinned-join", total, base, join, join, locks=locks),
        Scenario("pinned-crash", total, base, crash, [Step(base[:-1])], locks=locks),
        Scenario("pinned-gpu-outage", total, base, outage, outage, locks=locks),
        Scenario(
            "pinned-messy",
            total,
            base,
            messy,
            messy,
            locks=locks,
            start=start,
            jobsync_only=True,
            note=f"random start, {dead} dead",
        ),
    ]


def build_scenarios(config: Config) -> list[Scenario]:
    out: list[Scenario] = []
    rolling = set(config.rolling)
    grid = list(dict.fromkeys([*config.grid, *config.rolling]))
    for total, n in grid:
        scs = unpinned_scenarios(config.seed, total, n, (total, n) in rolling)
        if (total, n) not in config.grid:
            scs = [s for s in scs if s.name == "rolling"]
        out.extend(scs)
    for total, n in config.pinned:
        out.extend(pinned_scenarios(config.seed, total, n))
    order = {name: i for i, name in enumerate(SCENARIOS)}
    out.sort(key=lambda s: (order[s.name], s.total_tokens, len(s.base)))
    return out


# --------------------------------------------------------------------------
# rows and timing


@dataclass
class Row:
    scenario: str
    algorithm: str
    total_tokens: int
    nodes: int
    nodes_after: int
    pinned: bool
    moved: int
    lower_bound: int
    ratio: float | None
    forced: int
    max_over_avg: float
    min_over_avg: float
    max_minus_min: int
    plan_ms: float
    plan_ms_min: float
    plan_ms_max: float
    runs: int
    steps: int
    pin_violations: int | None
    unowned: int
    check: str = ""
    note: str = ""


def load_stats(owners: Sequence[str | None], nodes: Sequence[str]) -> tuple[float, float, int]:
    """max/avg, min/avg and max-min of the loads of the live nodes."""
    count = Counter(o for o in owners if o is not None)
    loads = [count.get(n, 0) for n in nodes]
    assigned = sum(loads)
    if not assigned:
        return 0.0, 0.0, 0
    avg = assigned / len(loads)
    return max(loads) / avg, min(loads) / avg, max(loads) - min(loads)


def moved_between(before: Sequence[str | None], after: Sequence[str | None]) -> int:
    return sum(1 for a, b in zip(before, after, strict=True) if b is not None and a != b)


def forced_between(before: Sequence[str | None], nodes: Sequence[str]) -> int:
    live = set(nodes)
    return sum(1 for a in before if a is None or a not in live)


# --------------------------------------------------------------------------
# jobsync


@dataclass
class Trajectory:
    """jobsync's plans through a scenario: one entry per step."""

    plans: list[Plan]
    inputs: list[Owners]
    times: list[list[float]]
    lower_bounds: list[int]  # independent (unpinned) or the planner's (pinned)
    checks: list[str]


class Runner:
    def __init__(self, config: Config, log: Callable[[str], None]) -> None:
        self.config = config
        self.log = log
        self.base_plans: dict[tuple[int, tuple[str, ...], bool], Plan] = {}
        self.base_states: dict[tuple[str, int, tuple[str, ...]], State] = {}
        self.keys: dict[int, list[int]] = {}
        self.trajectories: dict[tuple[int, int], Trajectory] = {}
        self.problems: list[str] = []
        self.scheme_rows: dict[object, Row] = {}

    # -- jobsync ----------------------------------------------------------

    def base_plan(self, sc: Scenario) -> Plan:
        key = (sc.total_tokens, sc.base, sc.pinned)
        if key not in self.base_plans:
            empty: Owners = [None] * sc.total_tokens
            self.base_plans[key] = plan(sc.total_tokens, empty, sc.base, sc.locks)
        return self.base_plans[key]

    def trajectory(self, sc: Scenario, steps: list[Step], timing: bool) -> Trajectory:
        memo = (id(sc), id(steps))
        if memo in self.trajectories:
            return self.trajectories[memo]
        total = sc.total_tokens
        current: Owners
        if sc.from_empty:
            current = [None] * total
        elif sc.start is not None:
            current = list(sc.start)
        else:
            current = list(self.base_plan(sc).assignment)
        runs = self.config.runs if timing and len(steps) == 1 else 1
        traj = Trajectory([], [], [], [], [])
        for step in steps:
            owners = [None if o in step.released else o for o in current]
            measured = timed(partial(plan, total, owners, step.nodes, sc.locks), runs)
            result, times = measured.result, measured.wall_ms
            check = self.check_plan(sc, owners, step.nodes, result)
            traj.plans.append(result)
            traj.inputs.append(owners)
            traj.times.append(times)
            traj.lower_bounds.append(
                result.lower_bound if sc.pinned else balanced_lower_bound(total, owners, step.nodes)
            )
            traj.checks.append(check)
            current = list(result.assignment)
        self.trajectories[memo] = traj
        return traj

    def check_plan(self, sc: Scenario, owners: Owners, nodes: Sequence[str], result: Plan) -> str:
        """Compare the plan with the independent computations; record problems."""
        total = sc.total_tokens
        where = f"{sc.name} T={total} N={len(sc.base)} -> {len(nodes)} nodes"
        problems: list[str] = []
        recount = moved_between(owners, result.assignment)
        if recount != result.moved:
            problems.append(f"moved={result.moved} but the assignment differs in {recount}")
        if result.moved != result.lower_bound:
            problems.append(f"moved={result.moved} != its lower_bound={result.lower_bound}")
        elig = eligibility(total, sc.locks, nodes)
        bad = pin_violations(result.assignment, elig)
        if bad:
            problems.append(f"{bad} pin violations")
        unowned = {t for t, e in enumerate(elig) if e is None}
        if set(result.unowned) != unowned:
            problems.append(f"unowned={len(result.unowned)}, expected {len(unowned)}")
        kind = "closed form"
        if not sc.pinned:
            mine = balanced_lower_bound(total, owners, nodes)
            theirs = lower_bound_moves(total, owners, nodes)
            if not mine == theirs == result.lower_bound == result.moved:
                problems.append(
                    f"lower bound: independent {mine}, lower_bound_moves {theirs}, "
                    f"plan.lower_bound {result.lower_bound}, moved {result.moved}"
                )
            spread = load_stats(result.assignment, nodes)[2]
            if spread > 1:
                problems.append(f"unbalanced: max-min={spread}")
        else:
            forced = must_move(owners, elig)
            if result.lower_bound < forced:
                problems.append(f"lower_bound {result.lower_bound} < {forced} forced moves")
            exact = exact_pinned(total, owners, nodes, sc.locks)
            if exact is None:
                kind = "relaxed"
            else:
                kind = "flow"
                count = Counter(result.assignment)
                loads = tuple(sorted((count.get(n, 0) for n in nodes), reverse=True))
                if exact.moves != result.lower_bound:
                    problems.append(
                        f"min-cost flow says {exact.moves} moves, "
                        f"plan.lower_bound={result.lower_bound}"
                    )
                if loads != exact.loads:
                    sq = sum(x * x for x in loads)
                    sq_exact = sum(x * x for x in exact.loads)
                    problems.append(
                        f"load vector differs from the flow's (sum of squares {sq} vs {sq_exact})"
                    )
        for p in problems:
            self.problems.append(f"{where}: {p}")
            self.log(f"PLANNER CHECK FAILED: {where}: {p}")
        return kind if not problems else "MISMATCH"

    def jobsync_row(self, sc: Scenario) -> Row:
        traj = self.trajectory(sc, sc.steps, timing=True)
        times = [statistics.median(t) for t in traj.times] if len(sc.steps) > 1 else traj.times[0]
        forced = sum(
            must_move(o, eligibility(sc.total_tokens, sc.locks, s.nodes))
            for o, s in zip(traj.inputs, sc.steps, strict=True)
        )
        checks = set(traj.checks)
        return make_row(
            sc,
            JOBSYNC,
            sc.steps,
            traj.plans[-1].assignment,
            moved=sum(p.moved for p in traj.plans),
            lower_bound=sum(traj.lower_bounds),
            forced=forced,
            times=times,
            unowned=len(traj.plans[-1].unowned),
            check="MISMATCH" if "MISMATCH" in checks else "/".join(sorted(checks)),
            note=sc.note,
        )

    # -- hashing schemes ------------------------------------------------------

    def token_keys(self, total: int) -> list[int]:
        if total not in self.keys:
            self.keys[total] = token_keys(total, str(self.config.seed).encode())
        return self.keys[total]

    def scheme_row(self, sc: Scenario, scheme: Scheme) -> Row | None:
        total = sc.total_tokens
        widest = max(len(s.nodes) for s in sc.steps)
        if scheme.name == "hrw" and total * widest > HRW_MAX_PAIRS:
            return None
        if sc.jobsync_only:
            return None
        if scheme.name == "jump-middle" and sc.from_empty:
            return None  # identical to jump
        if scheme.name == "jump-middle" and sc.name in ("join", "pinned-join"):
            return None  # identical to jump
        steps = sc.steps
        if scheme.removal == "end":
            steps = sc.steps_end
        elif scheme.removal == "middle" and sc.steps_middle is not None:
            steps = sc.steps_middle
        # A hashing scheme cannot tell a graceful leave from a crash: reuse the row.
        same = (scheme.name, total, sc.base, sc.from_empty, tuple(s.nodes for s in steps))
        if same in self.scheme_rows:
            return replace(self.scheme_rows[same], scenario=sc.name)
        row = self._scheme_row(sc, scheme, steps)
        self.scheme_rows[same] = row
        return row

    def _scheme_row(self, sc: Scenario, scheme: Scheme, steps: list[Step]) -> Row:
        total = sc.total_tokens
        keys = self.token_keys(total)
        cfg = self.config
        if sc.from_empty:
            first = timed(
                partial(scheme.initial, keys, sc.base),
                cfg.alt_runs,
                min_runs=1,
                budget_s=cfg.alt_budget_s,
            )
            state, times = first.result, first.wall_ms
            before: Owners = [None] * total
            moved = moved_between(before, state.owners)
            forced = total
        else:
            memo = (scheme.name, total, sc.base)
            if memo not in self.base_states:
                self.base_states[memo] = scheme.initial(keys, sc.base)
            state = self.base_states[memo]
            moved = forced = 0
            per_step: list[float] = []
            times = []
            for step in steps:
                prev = state
                update = timed(
                    partial(scheme.update, prev, step.nodes),
                    cfg.alt_runs if len(steps) == 1 else 1,
                    min_runs=1,
                    budget_s=cfg.alt_budget_s,
                )
                state, t = update.result, update.wall_ms
                moved += moved_between(prev.owners, state.owners)
                forced += forced_between(prev.owners, step.nodes)
                per_step.append(statistics.median(t))
                times = t
            if len(steps) > 1:
                times = per_step
        note = sc.note
        if steps != sc.steps:
            which = "newest" if steps is sc.steps_end else "middle"
            note = (note + " " if note else "") + f"{which} member(s) removed"
        return make_row(
            sc,
            scheme.name,
            steps,
            state.owners,
            moved=moved,
            lower_bound=sum(self.trajectory(sc, steps, timing=False).lower_bounds),
            forced=forced,
            times=times,
            unowned=0,
            check="naive (pins ignored)" if sc.pinned else "",
            note=note,
        )


def make_row(
    sc: Scenario,
    algorithm: str,
    steps: Sequence[Step],
    final: Sequence[str | None],
    *,
    moved: int,
    lower_bound: int,
    forced: int,
    times: Sequence[float],
    unowned: int,
    check: str,
    note: str,
) -> Row:
    """One algorithm's row for ``sc``: ``final`` are the owners after the last step."""
    final_nodes = steps[-1].nodes
    mx, mn, spread = load_stats(final, final_nodes)
    viol = None
    if sc.pinned:
        viol = pin_violations(final, eligibility(sc.total_tokens, sc.locks, final_nodes))
    return Row(
        scenario=sc.name,
        algorithm=algorithm,
        total_tokens=sc.total_tokens,
        nodes=len(sc.base),
        nodes_after=len(final_nodes),
        pinned=sc.pinned,
        moved=moved,
        lower_bound=lower_bound,
        ratio=moved / lower_bound if lower_bound else None,
        forced=forced,
        max_over_avg=mx,
        min_over_avg=mn,
        max_minus_min=spread,
        plan_ms=statistics.median(times),
        plan_ms_min=min(times),
        plan_ms_max=max(times),
        runs=len(times),
        steps=len(steps),
        pin_violations=viol,
        unowned=unowned,
        check=check,
        note=note,
    )


# --------------------------------------------------------------------------
# output


def _fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}"


def _fmt_ms(row: Row) -> str:
    return f"{row.plan_ms:.2f} [{row.plan_ms_min:.2f}-{row.plan_ms_max:.2f}] x{row.runs}"


HEADER = (
    f"{'scenario':<18} {'T':>7} {'N':>5} {'algorithm':<13} {'moved':>7} {'LB':>7} "
    f"{'ratio':>6} {'forced':>7} {'max/avg':>7} {'min/avg':>7} {'max-min':>7} "
    f"{'viol':>5} {'plan ms median [min-max] xruns':<32} check / note"
)


def format_row(row: Row) -> str:
    viol = "-" if row.pin_violations is None else str(row.pin_violations)
    tail = " ".join(x for x in (row.check, row.note) if x)
    return (
        f"{row.scenario:<18} {row.total_tokens:>7} {row.nodes:>5} {row.algorithm:<13} "
        f"{row.moved:>7} {row.lower_bound:>7} {_fmt_ratio(row.ratio):>6} {row.forced:>7} "
        f"{row.max_over_avg:>7.2f} {row.min_over_avg:>7.2f} {row.max_minus_min:>7} "
        f"{viol:>5} {_fmt_ms(row):<32} {tail}"
    )


def print_table(rows: Sequence[Row], out: Callable[[str], None]) -> None:
    out(HEADER)
    out("-" * len(HEADER))
    group: tuple[str, int, int] | None = None
    for row in rows:
        key = (row.scenario, row.total_tokens, row.nodes)
        if group is not None and key != group:
            out("")
        group = key
        out(format_row(row))


def write_plot(rows: Sequence[Row], path: Path, total: int = 10_000) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise SystemExit(
            "--plot needs matplotlib, an optional dependency: "
            "pip install 'jobsync[bench]' (or pip install matplotlib)"
        ) from exc
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    algorithms = list(dict.fromkeys(r.algorithm for r in rows))
    palette = plt.get_cmap("tab10")
    for k, algo in enumerate(algorithms):
        color = "black" if algo == JOBSYNC else palette(k % 10)
        emphasis = {"zorder": 5, "linewidth": 2.5} if algo == JOBSYNC else {}
        for scenario, style in (("join", "-o"), ("leave", "--s")):
            pts = sorted(
                (r.nodes, r.ratio)
                for r in rows
                if r.algorithm == algo
                and r.scenario == scenario
                and r.total_tokens == total
                and r.ratio is not None
            )
            if pts:
                left.plot(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    style,
                    color=color,
                    label=f"{algo} {scenario}",
                    **emphasis,
                )
        pts2 = sorted(
            (r.nodes, r.max_over_avg)
            for r in rows
            if r.algorithm == algo and r.scenario == "initial" and r.total_tokens == total
        )
        if pts2:
            right.plot(
                [p[0] for p in pts2],
                [p[1] for p in pts2],
                "-o",
                color=color,
                label=algo,
                **emphasis,
            )
    left.set(
        xscale="log",
        yscale="log",
        xlabel="N (nodes before the change)",
        ylabel="tokens moved / lower bound",
        title=f"Moves vs the lower bound (T={total:,}; join solid, leave dashed)",
    )
    left.axhline(1.0, color="black", linewidth=0.8)
    left.legend(fontsize=6, ncol=2)
    right.set(
        xscale="log",
        xlabel="N",
        ylabel="max load / average load",
        title=f"Balance of the initial distribution (T={total:,})",
    )
    right.axhline(1.0, color="black", linewidth=0.8)
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------
# entry point


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.rebalance",
        description="Compare jobsync's planner with consistent-hashing schemes.",
    )
    p.add_argument("--quick", action="store_true", help="a small grid (a few seconds)")
    p.add_argument("--seed", type=int, default=1, help="seed for names, victims and pins")
    p.add_argument("--json", type=Path, metavar="PATH", help="write the rows as JSON")
    p.add_argument("--plot", type=Path, metavar="PATH", help="write a PNG (needs matplotlib)")
    p.add_argument("--quiet", action="store_true", help="do not print the table")
    return p.parse_args(argv)


def run(config: Config, log: Callable[[str], None]) -> tuple[list[Row], list[str]]:
    """All rows of the benchmark, and the planner problems found (empty: none)."""
    runner = Runner(config, log)
    schemes = default_schemes()
    rows: list[Row] = []
    for sc in build_scenarios(config):
        rows.append(runner.jobsync_row(sc))
        for scheme in schemes:
            row = runner.scheme_row(sc, scheme)
            if row is not None:
                rows.append(row)
    return rows, runner.problems


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = quick_config(args.seed) if args.quick else default_config(args.seed)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr)

    if args.plot is not None:  # fail before the work, not after
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            log(
                "--plot needs matplotlib, an optional dependency: "
                "pip install 'jobsync[bench]' (or pip install matplotlib)"
            )
            return 2
    start = time.perf_counter()
    rows, problems = run(config, log)
    elapsed = time.perf_counter() - start
    if not args.quiet:
        print_table(rows, print)
        print()
        print(
            f"{len(rows)} rows in {elapsed:.1f} s (seed {args.seed}"
            f"{', quick' if args.quick else ''}).  Hashing schemes ignore pins on the "
            "pinned-* scenarios (viol counts the violations); HRW is skipped where "
            f"T*N > {HRW_MAX_PAIRS:,}."
        )
        if problems:
            print(f"{len(problems)} PLANNER CHECK(S) FAILED (see stderr)")
        else:
            print("Planner checks: moved == lower bound everywhere; independent checks agree.")
    if args.json is not None:
        payload = [asdict(r) for r in rows]
        args.json.write_text(json.dumps(payload, indent=1) + "\n")
    if args.plot is not None:
        write_plot(rows, args.plot)
    return 1 if problems else 0


__all__ = [
    "Config",
    "Row",
    "Scenario",
    "build_scenarios",
    "default_config",
    "main",
    "quick_config",
    "run",
]

if __name__ == "__main__":
    raise SystemExit(main())
