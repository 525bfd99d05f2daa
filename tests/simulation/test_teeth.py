"""The checker has teeth: with one safety defence switched off, it finds a breach.

Each switch (jobsync.sim.switches) removes exactly one defence of DESIGN.md
section 5; the simulator must then report a violation of invariant 1
(exclusivity) or 2 (fencing, exactly-once) within a bounded number of seeds,
and the same seed must pass once the defence is back on.  The expiry
re-check only matters when a holder's heartbeat lands between a plan's read
and its commit, so it is hunted with the ``teeth`` profile, whose fault mix
favours stalled commits and partitions that end at the worst moment.
"""

from __future__ import annotations

import logging

import pytest

from jobsync.sim import make_spec, run_scenario
from jobsync.sim.switches import SWITCHES, active, disabled

CASES = [
    ("revoke_before_assign", "ci", 10),
    ("self_fencing", "ci", 20),
    ("expiry_recheck", "teeth", 60),
]


@pytest.mark.parametrize(("switch", "profile", "bound"), CASES)
def test_switching_off_a_defence_is_caught(switch: str, profile: str, bound: int) -> None:
    logging.getLogger("jobsync").setLevel(logging.CRITICAL)
    found = None
    with disabled(switch):
        for seed in range(bound):
            result = run_scenario(make_spec(seed, profile))
            if result.violation is not None:
                found = (seed, result.violation)
                break
    assert found is not None, f"{switch} off: no violation in {bound} seeds"
    seed, violation = found
    assert violation.invariant in (1, 2), violation
    assert all(active().values())
    again = run_scenario(make_spec(seed, profile))
    assert again.ok, f"seed {seed} fails with every defence on: {again.violation}"


@pytest.mark.parametrize(("switch", "bound"), [(c[0], 60) for c in CASES])
def test_exclusivity_alone_also_catches_each_switch(
    switch: str, bound: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the instant checks of invariant 2 blinded (a DirectAssign or an
    acknowledgement while the holder still claims), invariant 1 must see the
    double claim itself once the new owner publishes."""
    from jobsync.sim.invariants import Checker

    monkeypatch.setattr(Checker, "_still_claimed", lambda self, commit: [])
    monkeypatch.setattr(Checker, "on_ack", lambda self, *args: None)
    logging.getLogger("jobsync").setLevel(logging.CRITICAL)
    with disabled(switch):
        for seed in range(bound):
            violation = run_scenario(make_spec(seed, "teeth")).violation
            if violation is not None:
                assert violation.invariant == 1, violation
                return
    pytest.fail(f"{switch} off: invariant 1 saw nothing in {bound} seeds")


def test_switches_are_restored_even_on_error() -> None:
    with pytest.raises(RuntimeError), disabled(*SWITCHES):
        assert not any(active().values())
        raise RuntimeError("boom")
    assert all(active().values())
    with pytest.raises(ValueError, match="unknown switch"), disabled("no_such_defence"):
        pass
