"""The simulator with node capacities: every invariant holds, and the checker has teeth.

``make_spec(..., capacities=True)`` gives each node name a capacity (0.5, 1,
2 or 4) from a generator of its own, so a seed's scenario without it is the
one it always was (GENERATOR unchanged).  The checker recomputes every plan
with the capacities of the rows the leader read, and demands each node's
count within one token of its exact quota when nothing is pinned.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import pytest

import jobsync.runtime.leader as leader_module
from jobsync.core.planner import Plan, plan
from jobsync.sim import make_spec

from .seeds import sweep


def test_capacities_leave_every_seed_without_them_unchanged() -> None:
    plain, weighted = make_spec(41), make_spec(41, capacities=True)
    assert attrs_without_capacities(plain) == attrs_without_capacities(weighted)
    assert plain.capacity_of("cpu-001") == 1.0
    assert {weighted.capacity_of(f"cpu-{i:03}") for i in range(40)} == {0.5, 1.0, 2.0, 4.0}
    assert weighted.capacity_of("gpu-002") == make_spec(41, capacities=True).capacity_of("gpu-002")
    assert weighted.command().endswith(" --capacities")
    assert "--capacities" not in plain.command()


def attrs_without_capacities(spec: object) -> dict[str, object]:
    import attrs

    return {k: v for k, v in attrs.asdict(spec).items() if k != "capacities"}  # type: ignore[arg-type]


def test_seeded_scenarios_with_capacities_hold_every_invariant() -> None:
    logging.getLogger("jobsync").setLevel(logging.CRITICAL)
    failures, _, plans = sweep(range(3000, 3040), capacities=True)
    assert not failures, "\n".join(failures)
    assert plans > 100


def test_the_checker_finds_a_leader_that_ignores_capacities(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    logging.getLogger("jobsync").setLevel(logging.CRITICAL)

    def count_only(
        total: int,
        owners: Sequence[str | None],
        nodes: Sequence[str],
        locks: Mapping[int, Sequence[str]] | None = None,
        capacities: Mapping[str, float] | None = None,
    ) -> Plan:
        return plan(total, owners, nodes, locks)

    monkeypatch.setattr(leader_module, "plan", count_only)
    _, found, _ = sweep(range(3000, 3020), capacities=True)
    assert found, "a leader planning by count alone went unnoticed in 20 seeds"
    assert all(v is not None and v.invariant == 4 for v in found), found
