"""The checker has teeth: with one safety defence switched off, it finds a breach.

Each field of ``jobsync.core.defences.Defences`` removes exactly one defence
(docs/PROTOCOL.md, "Defences and the faults that test them"); passed to the
scenario explicitly (``make_spec(..., defences_off=...)``, never a module
global), it must make the simulator report a violation of the invariant
that defence protects within a bounded number of seeds, and the same seed
must pass once the defence is back on.  The seed that found each defect
first is kept below as a regression: it must keep failing without the
defence and passing with it.

The ``teeth`` profile favours the faults that hunt these defects: stalled
commits and partitions that end at the worst moment, duplicates that give
up, lost replies, pauses between a leader's read and its write, user
transactions held open, SIGTERM during outages.
"""

from __future__ import annotations

import logging

import pytest

from jobsync.core.defences import Defences
from jobsync.sim import make_spec, run_scenario

# (defence, invariants its absence breaks, seeds searched, the seed that found it first
# under GENERATOR 2 of jobsync.sim.scenario)
CASES = [
    ("revoke_before_assign", (1, 2), 10, 0),
    ("self_fencing", (1, 2), 20, 0),
    ("expiry_recheck", (1, 2), 60, 17),
    ("deregister_keeps_fence", (1, 2), 20, 4),  # defect 1: two owners after a duplicate gives up
    ("retry_leader_errors", (7,), 60, 32),  # defect 2: the leader's thread dies for good
    ("reregister_after_lost_reply", (7,), 20, 3),  # defect 3: a lost reply, a false conflict
    ("bounded_lock_waits", (8,), 120, 78),  # defect 4: a user transaction hangs a worker
    ("sigterm_deadline", (7,), 20, 7),  # defect 5: SIGTERM during an outage never ends
    ("short_reap_locks", (8,), 60, 38),  # defect 6: a paused leader stalls heartbeats
]


def _quiet() -> None:
    logging.getLogger("jobsync").setLevel(logging.CRITICAL)


@pytest.mark.slow
@pytest.mark.parametrize(("defence", "invariants", "bound", "known"), CASES)
def test_switching_off_a_defence_is_caught(
    defence: str, invariants: tuple[int, ...], bound: int, known: int
) -> None:
    _quiet()
    found = None
    for seed in range(bound):
        result = run_scenario(make_spec(seed, "teeth", defences_off=(defence,)))
        if result.violation is not None:
            found = (seed, result.violation)
            break
    assert found is not None, f"{defence} off: no violation in {bound} seeds"
    seed, violation = found
    assert violation.invariant in invariants, violation
    again = run_scenario(make_spec(seed, "teeth"))
    assert again.ok, f"seed {seed} fails with every defence on: {again.violation}"


@pytest.mark.parametrize(("defence", "invariants", "bound", "known"), CASES)
def test_the_recorded_seed_is_a_regression(
    defence: str, invariants: tuple[int, ...], bound: int, known: int
) -> None:
    """The seed that found each defect fails without its defence and passes with it
    (re-record it when GENERATOR changes)."""
    _quiet()
    without = run_scenario(make_spec(known, "teeth", defences_off=(defence,)))
    assert without.violation is not None and without.violation.invariant in invariants
    assert run_scenario(make_spec(known, "teeth")).ok


def test_a_spec_carries_its_defences_and_replays_them() -> None:
    spec = make_spec(3, "teeth", defences_off=("sigterm_deadline",))
    assert spec.defences == Defences(sigterm_deadline=False)
    assert "--switch-off sigterm_deadline" in spec.command()
    assert make_spec(3, "teeth").defences == Defences()


def test_an_unknown_defence_is_refused_by_name() -> None:
    from jobsync.core.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match="no_such_defence"):
        make_spec(0, "ci", defences_off=("no_such_defence",))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("defence", "bound"),
    [("revoke_before_assign", 60), ("self_fencing", 60), ("expiry_recheck", 60),
     ("deregister_keeps_fence", 60)],
)  # fmt: skip
def test_exclusivity_alone_also_catches_each_fencing_defect(
    defence: str, bound: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the instant checks of invariant 2 blinded (a DirectAssign or an
    acknowledgement while the holder still claims), invariant 1 must see the
    double claim itself once the new owner publishes."""
    from jobsync.sim.invariants import Checker
    from jobsync.sim.planlaws import PlanLaws

    monkeypatch.setattr(PlanLaws, "_still_claimed", lambda self, commit: [])
    monkeypatch.setattr(Checker, "on_ack", lambda self, *args: None)
    _quiet()
    for seed in range(bound):
        violation = run_scenario(make_spec(seed, "teeth", defences_off=(defence,))).violation
        if violation is not None:
            assert violation.invariant == 1, violation
            return
    pytest.fail(f"{defence} off: invariant 1 saw nothing in {bound} seeds")
