"""Running a range of seeded scenarios, for the tests that sweep seeds."""

from __future__ import annotations

from jobsync.sim import make_spec, run_scenario
from jobsync.sim.errors import InvariantViolation


def sweep(seeds: range, **options: bool) -> tuple[list[str], list[InvariantViolation], int]:
    """Run ``make_spec(seed, **options)`` for every seed: each failure as its replay
    command and violation, the violations themselves, and the plans checked."""
    failures: list[str] = []
    found: list[InvariantViolation] = []
    plans = 0
    for seed in seeds:
        result = run_scenario(make_spec(seed, **options))  # type: ignore[arg-type]
        plans += result.plans_checked
        if result.violation is not None:
            failures.append(f"{result.spec.command()}: {result.violation}")
            found.append(result.violation)
    return failures, found, plans
