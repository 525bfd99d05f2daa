"""Plan commit on memory, SQLite and PostgreSQL, side by side, for 10,000 tokens.

    python -m benchmarks.plan_commit [--quick] [--dsn DSN] [--runs N] [--backends LIST]

Times ``Backend.commit_plan`` end to end (argument checks, every statement,
the commit) for 10,000 tokens on the memory store, SQLite (a temporary file)
and PostgreSQL (a scratch schema, dropped afterwards), in one run, on four
plans:

- ``initial``: the first plan of an empty site, 10,000 tokens from unowned to
  7 live nodes;
- ``remap``: every one of the 10,000 rows re-mapped: all held by 7 expired
  incarnations (a cold start after an outage), handed straight to 7 new ones;
- ``move``: one of 7 nodes crashed; its 1,429 tokens go to the other 6;
- ``revoke``: the graceful variant: 1,429 revokes from a live node.

Each scenario is prepared in two halves, "before" and "after the wait" for
the short leases to run out, so one wait serves every run on every backend.
Each run uses a fresh site; only the ``commit_plan`` call is timed (after a
``gc.collect()``), the backends interleaved run by run.  Prints median, min
and max (milliseconds), the round trips one commit costs (the backend's
``statistics()['round_trips']``; the memory store counts one per verb) and,
for PostgreSQL, the verdict against its 30 ms target (``TARGET_MS``).

If PostgreSQL does not answer, its column says so and the others still run.
``run(...)`` returns the rows.  The DSN defaults to ``JOBSYNC_TEST_DSN``,
else 127.0.0.1:5432 as postgres.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs

from benchmarks._common import (
    BACKENDS,
    DEFAULT_DSN,
    default_dsn,
    postgres_problem,
    scratch_store,
    spread,
    stopwatch,
)
from jobsync.backends.base import Backend, ClusterView, DirectAssign, PlanCommit, Revoke

TOTAL = 10_000
NODES = 7
TARGET_MS = 30.0
"""PostgreSQL's target for the median of every scenario."""
SHORT_LEASE = 1.0
"""Leases the setup waits out: long enough to build a 10,000-token plan on a busy box."""
Row = dict[str, Any]
Node = tuple[str, int]

__all__ = ["BACKENDS", "DEFAULT_DSN", "NODES", "SCENARIOS", "TARGET_MS", "TOTAL", "run", "table"]


@attrs.define
class Prepared:
    """A site ready for its timed commit: ``build`` (after any wait) makes the plan."""

    site: str
    build: Callable[[], PlanCommit]


# -- scenarios: prepare(db, site, lease) -> Prepared -------------------------------------
# The token count is the site's (the smoke test uses a small one).


def _register(db: Backend, site: str, prefix: str, lease: float = 600.0) -> list[Node]:
    return [
        (f"{prefix}{i}", db.register(site, f"{prefix}{i}", lease).incarnation) for i in range(NODES)
    ]


def _commit(
    db: Backend,
    site: str,
    leader: Node,
    assigns: tuple[DirectAssign, ...] = (),
    revokes: tuple[Revoke, ...] = (),
) -> PlanCommit:
    view = db.read_cluster(site)
    return PlanCommit(
        leader=leader[0],
        leader_incarnation=leader[1],
        expected_generation=view.site.generation,
        basis=view.site.change_counter,
        assigns=assigns,
        revokes=revokes,
    )


def _spread(
    view: ClusterView, tokens: Sequence[int], nodes: list[Node]
) -> tuple[DirectAssign, ...]:
    """Direct moves of ``tokens`` round-robin over ``nodes``."""
    return tuple(
        DirectAssign(
            token=t,
            expected_incarnation=view.tokens.incarnation[t],
            expected_epoch=view.tokens.epoch[t],
            owner=nodes[i % len(nodes)][0],
            incarnation=nodes[i % len(nodes)][1],
        )
        for i, t in enumerate(tokens)
    )


def _assign_all(db: Backend, site: str, nodes: list[Node]) -> tuple[DirectAssign, ...]:
    """Every token of the site to ``nodes``: token t to node t mod 7."""
    view = db.read_cluster(site)
    return _spread(view, range(len(view.tokens)), nodes)


def _initial(db: Backend, site: str, lease: float) -> Prepared:
    nodes = _register(db, site, "n")
    return Prepared(site, lambda: _commit(db, site, nodes[0], assigns=_assign_all(db, site, nodes)))


def _remap(db: Backend, site: str, lease: float) -> Prepared:
    old = _register(db, site, "old", lease)
    db.commit_plan(site, _commit(db, site, old[0], assigns=_assign_all(db, site, old)))

    def build() -> PlanCommit:  # after every old lease ran out
        new = _register(db, site, "new")
        return _commit(db, site, new[0], assigns=_assign_all(db, site, new))

    return Prepared(site, build)


def _crashed(db: Backend, site: str, lease: float) -> tuple[list[Node], list[int]]:
    """7 nodes share the tokens; node 1 has the short lease.  The 6 others, node 1's tokens."""
    leader = ("n0", db.register(site, "n0", 600.0).incarnation)
    victim = ("n1", db.register(site, "n1", lease).incarnation)
    others = [(f"n{i}", db.register(site, f"n{i}", 600.0).incarnation) for i in range(2, NODES)]
    nodes = [leader, victim, *others]
    db.commit_plan(site, _commit(db, site, leader, assigns=_assign_all(db, site, nodes)))
    total = db.read_cluster(site).site.total_tokens
    return [leader, *others], [t for t in range(total) if t % NODES == 1]


def _move(db: Backend, site: str, lease: float) -> Prepared:
    nodes, victim = _crashed(db, site, lease)

    def build() -> PlanCommit:  # after the victim's lease ran out
        assigns = _spread(db.read_cluster(site), victim, nodes)
        return _commit(db, site, nodes[0], assigns=assigns)

    return Prepared(site, build)


def _revoke(db: Backend, site: str, lease: float) -> Prepared:
    nodes, victim = _crashed(db, site, 600.0)  # nobody expires: the holder is live

    def build() -> PlanCommit:
        view = db.read_cluster(site)
        revokes = tuple(
            Revoke(
                token=t,
                expected_incarnation=view.tokens.incarnation[t] or 0,
                expected_epoch=view.tokens.epoch[t],
                destination=nodes[i % len(nodes)][0],
            )
            for i, t in enumerate(victim)
        )
        return _commit(db, site, nodes[0], revokes=revokes)

    return Prepared(site, build)


Setup = Callable[[Backend, str, float], Prepared]
SCENARIOS: tuple[tuple[str, str, Setup, bool], ...] = (
    # key, description, prepare, waits for a lease to run out
    ("initial", "initial plan into an empty site", _initial, False),
    ("remap", "re-map every row (expired holders)", _remap, True),
    ("move", "move a crashed node's tokens (1/7)", _move, True),
    ("revoke", "revoke a live node's tokens (graceful)", _revoke, False),
)


# -- backends -----------------------------------------------------------------------------
@contextlib.contextmanager
def open_backends(names: Sequence[str], dsn: str) -> Iterator[dict[str, Backend]]:
    """Fresh handles: a memory store, a SQLite temp file, a PostgreSQL scratch schema."""
    with contextlib.ExitStack() as stack:
        yield {name: stack.enter_context(scratch_store(name, dsn)).open("bench") for name in names}


# -- the run ------------------------------------------------------------------------------
def run(
    dsn: str = DEFAULT_DSN,
    quick: bool = False,
    *,
    backends: Sequence[str] = BACKENDS,
    runs: int | None = None,
    total: int = TOTAL,
    lease: float = SHORT_LEASE,
) -> list[Row]:
    """Time each scenario on each backend; one row per (backend, scenario), in ms.

    A backend that cannot be opened (PostgreSQL not answering) gets one row per
    scenario with ``skipped`` set to the reason and no times.
    """
    runs = runs if runs is not None else (3 if quick else 9)
    names = list(backends)
    skipped: dict[str, str] = {}
    if "postgres" in names:
        problem = postgres_problem(dsn)
        if problem is not None:
            skipped["postgres"] = problem
            names.remove("postgres")
    rows: list[Row] = []
    with open_backends(names, dsn) as dbs:
        for key, label, prepare, waits in SCENARIOS:
            prepared: dict[str, list[Prepared]] = {name: [] for name in dbs}
            for i in range(runs):
                for name, db in dbs.items():
                    site = f"{key}-{i}"
                    db.ensure_site(site, total, "xxh3")
                    prepared[name].append(prepare(db, site, lease))
            if waits:
                time.sleep(lease + 0.05)  # every short lease of every run has run out
            times: dict[str, list[float]] = {name: [] for name in dbs}
            trips: dict[str, list[int]] = {name: [] for name in dbs}
            writes: dict[str, int] = {}
            for i in range(runs):
                for name, db in dbs.items():  # interleaved: drift hits every backend alike
                    site, plan = prepared[name][i].site, prepared[name][i].build()
                    before = db.statistics().get("round_trips", 0)
                    sample = stopwatch(lambda: db.commit_plan(site, plan), collect=True)
                    times[name].append(sample.wall_ms)
                    trips[name].append(db.statistics().get("round_trips", 0) - before)
                    writes[name] = len(plan.assigns) + len(plan.revokes)
            for name in dbs:
                median, low, high = spread(times[name])
                row: Row = {
                    "backend": name,
                    "scenario": key,
                    "description": label,
                    "total_tokens": total,
                    "writes": writes[name],
                    "runs": runs,
                    "median_ms": median,
                    "min_ms": low,
                    "max_ms": high,
                    "round_trips": statistics.median(trips[name]),
                }
                if name == "postgres":
                    row["target_ms"] = TARGET_MS
                    row["within_target"] = median <= TARGET_MS
                rows.append(row)
            for name, reason in skipped.items():
                rows.append(
                    {"backend": name, "scenario": key, "description": label, "skipped": reason}
                )
    order = {b: i for i, b in enumerate(BACKENDS)}
    scen = {s[0]: i for i, s in enumerate(SCENARIOS)}
    rows.sort(key=lambda r: (scen[r["scenario"]], order.get(r["backend"], 99)))
    return rows


def table(rows: Sequence[Row]) -> str:
    backends = [b for b in BACKENDS if any(r["backend"] == b for r in rows)]
    head = f"{'plan commit':<40} {'writes':>6}" + "".join(
        f"  {b + ' med (min-max) ms, rt':>30}" for b in backends
    )
    lines = [head, "-" * len(head)]
    for key, label, _, _ in SCENARIOS:
        mine = {r["backend"]: r for r in rows if r["scenario"] == key}
        if not mine:
            continue
        writes = next((r["writes"] for r in mine.values() if "writes" in r), "")
        cells = []
        for b in backends:
            r = mine.get(b)
            if r is None or "skipped" in r:
                cells.append(f"  {'skipped':>30}")
            else:
                cell = (
                    f"{r['median_ms']:.1f} ({r['min_ms']:.1f}-{r['max_ms']:.1f}), "
                    f"{r['round_trips']:g}"
                )
                cells.append(f"  {cell:>30}")
        lines.append(f"{label:<40} {writes!s:>6}" + "".join(cells))
    runs = next((r["runs"] for r in rows if "runs" in r), 0)
    total = next((r["total_tokens"] for r in rows if "total_tokens" in r), TOTAL)
    lines.append(
        f"(T={total:,}, 7 nodes; median/min/max over {runs} runs of commit_plan wall time; "
        "rt = round trips of one commit)"
    )
    targets = [r for r in rows if "target_ms" in r]
    if targets:
        over = [r["scenario"] for r in targets if not r["within_target"]]
        verdict = "ok" if not over else "OVER in " + ", ".join(over)
        lines.append(f"postgres target: median <= {TARGET_MS:.0f} ms in every scenario: {verdict}")
    for r in rows:
        if "skipped" in r and r["scenario"] == SCENARIOS[0][0]:
            lines.append(f"{r['backend']} skipped: {r['skipped']}")
    return "\n".join(lines)


def server_version(dsn: str) -> str:
    import psycopg

    with psycopg.connect(dsn, connect_timeout=3) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dsn", default=default_dsn())
    parser.add_argument("--quick", action="store_true", help="3 runs per scenario instead of 9")
    parser.add_argument("--runs", type=int, help="runs per scenario (overrides --quick)")
    parser.add_argument(
        "--backends", default=",".join(BACKENDS), help="comma-separated: memory,sqlite,postgres"
    )
    args = parser.parse_args(argv)
    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    if "postgres" in names and postgres_problem(args.dsn) is None:
        print(f"PostgreSQL {server_version(args.dsn)} at {args.dsn!r}")
    rows = run(args.dsn, args.quick, backends=names, runs=args.runs)
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
