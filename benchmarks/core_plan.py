"""Planner benchmark: ``python -m benchmarks.core_plan [--quick]``.

Times ``jobsync.core.planner.plan`` on the three scenarios the design holds
it to (pure Python, median of several runs) and prints a table with the
targets.  ``run()`` returns the rows for a combined benchmark.
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections.abc import Callable, Sequence

from benchmarks._common import spread, timed
from jobsync.core.planner import Plan, plan

DEAD = [f"gone-{i}" for i in range(5)]


def _unpinned(total: int, nodes: int, seed: int) -> Callable[[], Plan]:
    # A messy start: random owners over the live nodes plus 5 dead ones.
    rng = random.Random(seed)
    names = [f"node-{i:04d}" for i in range(nodes)]
    owners = [rng.choice(names) if rng.random() < 0.97 else rng.choice(DEAD) for _ in range(total)]
    return lambda: plan(total, owners, names)


def _fleet() -> list[str]:
    return (
        [f"gpu-{i:03d}" for i in range(50)]
        + [f"eu-{i:03d}" for i in range(100)]
        + [f"cpu-{i:03d}" for i in range(150)]
        + [f"node-{i}" for i in range(700)]
    )


PIN_RULES: list[list[str]] = [
    ["gpu-%"],
    ["eu-%"],
    ["node-1%"],
    ["gpu-%", "cpu-%"],
    ["cpu-%"],
    ["node-2_"],
    ["gpu-00%"],
    ["eu-0%", "eu-%"],
    ["tpu-%", "gpu-%"],
    ["%-1%"],
]


def _pinned(total: int, seed: int) -> Callable[[], Plan]:
    # 10 rules over 30% of the tokens; random owners, 5 dead, some unowned.
    rng = random.Random(seed)
    names = _fleet()
    pool = names + DEAD
    owners = [rng.choice(pool) if rng.random() < 0.99 else None for _ in range(total)]
    pinned = rng.sample(range(total), total * 3 // 10)
    locks = {t: PIN_RULES[k % len(PIN_RULES)] for k, t in enumerate(pinned)}
    return lambda: plan(total, owners, names, locks)


SCENARIOS: list[tuple[str, Callable[[], Callable[[], Plan]], float]] = [
    ("T=10,000 N=50 no pins", lambda: _unpinned(10_000, 50, 1), 5.0),
    ("T=100,000 N=1,000 no pins", lambda: _unpinned(100_000, 1_000, 2), 50.0),
    ("T=10,000 N=1,000 10 pin rules 30%", lambda: _pinned(10_000, 3), 100.0),
]


def run(quick: bool = False) -> list[dict[str, object]]:
    """Time every scenario; one row per scenario (times in milliseconds)."""
    rows: list[dict[str, object]] = []
    for name, build, target in SCENARIOS:
        # Wall-clock times, and this process's CPU times: on a shared machine the
        # second shows what the planner costs when it is not descheduled.  The
        # untimed first call warms the pattern cache and the allocator.
        timing = timed(build(), 3 if quick else 11, warmup=True)
        result = timing.result
        median, low, high = spread(timing.wall_ms)
        rows.append(
            {
                "scenario": name,
                "median_ms": median,
                "min_ms": low,
                "max_ms": high,
                "cpu_median_ms": statistics.median(timing.cpu_ms),
                "target_ms": target,
                "ok": median <= target,
                "moved": result.moved,
                "lower_bound": result.lower_bound,
            }
        )
    return rows


def _print(rows: Sequence[dict[str, object]]) -> None:
    head = (
        f"{'scenario':36} {'median':>8} {'min':>8} {'max':>8} {'cpu':>8} {'target':>8}"
        f"  {'moves':>6}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        flag = "" if r["ok"] else "  OVER TARGET"
        print(
            f"{r['scenario']!s:36} {r['median_ms']:8.1f} {r['min_ms']:8.1f} "
            f"{r['max_ms']:8.1f} {r['cpu_median_ms']:8.1f} {r['target_ms']:8.1f}"
            f"  {r['moved']!s:>6}{flag}"
        )
    print("(milliseconds; median/min/max wall clock, cpu = median process time)")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 runs per scenario instead of 11")
    _print(run(quick=parser.parse_args(argv).quick))


if __name__ == "__main__":
    main()
