"""The simulator with skewed task costs and measured-load balancing: every invariant
holds, the load moves of each plan stay within the budget, and the checker has teeth.

``make_spec(..., loads=True)`` gives each token a Pareto-distributed task cost
(``cost_of``, from a generator of its own, so a seed's scenario without it is
the one it always was; GENERATOR unchanged), the user loop passes it to
``complete(cost=)``, and the leader balances measured load
(``load_half_life_sec``).  Its plans are judged by ``jobsync.sim.loadlaws``.
"""

from __future__ import annotations

import logging

import attrs
import pytest

import jobsync.sim.invariants as invariants_module
import jobsync.sim.planlaws as planlaws_module
from jobsync.core.loadpolicy import LoadPolicy
from jobsync.runtime.loadtrack import LoadTracker
from jobsync.sim import make_spec
from jobsync.sim.loadlaws import LoadLaws

from .seeds import sweep


def test_loads_leave_every_seed_without_them_unchanged() -> None:
    plain, skewed = make_spec(43), make_spec(43, loads=True)
    assert attrs.evolve(skewed, loads=False) == plain
    assert plain.config.load_half_life_sec is None
    assert skewed.config.load_half_life_sec == 4 * skewed.timeout
    costs = sorted(skewed.cost_of(t) for t in range(1000))
    assert costs[-10] > 10 * costs[500]  # skewed: a few tokens carry much of the load
    assert skewed.cost_of(7) == make_spec(43, loads=True).cost_of(7)
    assert skewed.command().endswith(" --loads") and "--loads" not in plain.command()


@pytest.fixture
def judges(monkeypatch: pytest.MonkeyPatch) -> list[LoadLaws]:
    """Every LoadLaws the runs make (one per scenario), to read what they judged."""
    made: list[LoadLaws] = []

    class Spy(LoadLaws):
        def __init__(self, checker: invariants_module.Checker) -> None:
            super().__init__(checker)
            made.append(self)

    monkeypatch.setattr(planlaws_module, "LoadLaws", Spy)
    logging.getLogger("jobsync").setLevel(logging.CRITICAL)
    return made


def test_seeded_scenarios_with_skewed_loads_hold_every_invariant(judges: list[LoadLaws]) -> None:
    failures, _, plans = sweep(range(4000, 4030), loads=True)
    assert not failures, "\n".join(failures)
    assert len(judges) == 30
    judged = sum(j.checker.stats["load_plans_checked"] for j in judges)
    assert judged > 100 and plans == 0  # every plan judged by the load laws
    # Load moves happened (the leader measured the costs), within each run's budget.
    assert sum(j.most > 0 for j in judges) >= 5
    assert all(j.most <= j.budget for j in judges)


def test_the_checker_finds_a_leader_that_ignores_the_move_budget(
    judges: list[LoadLaws], monkeypatch: pytest.MonkeyPatch
) -> None:
    unpaced = LoadPolicy(budget=1.0, cooldown=0)
    original = LoadTracker.__init__

    def unbudgeted(self: LoadTracker, *args: float) -> None:
        original(self, *args)  # type: ignore[arg-type]
        self.policy = unpaced

    monkeypatch.setattr(LoadTracker, "__init__", unbudgeted)
    _, found, _ = sweep(range(4000, 4020), loads=True)
    assert found, "a leader moving load past the budget went unnoticed in 20 seeds"
    assert all(v is not None and v.invariant == 4 and "budget" in str(v) for v in found), found
