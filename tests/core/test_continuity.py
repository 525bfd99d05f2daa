"""The continuity rule (jobsync.core.continuity) at its boundaries."""

from __future__ import annotations

import pytest

from jobsync.core.continuity import Lineage, advanced, broken, quarantine_end


def at(timeline: str | None, counter: int, basis: int) -> Lineage:
    return Lineage(timeline=timeline, change_counter=counter, plan_basis=basis)


def test_the_first_observation_breaks_nothing() -> None:
    assert broken(None, at("00000001", 0, 0)) is None
    assert advanced(None, at("00000001", 3, 2)) == at("00000001", 3, 2)


@pytest.mark.parametrize(
    ("observed", "why"),
    [
        (at("00000001", 5, 4), None),  # unchanged
        (at("00000001", 9, 4), None),  # forward
        (at(None, 5, 4), None),  # no timeline reported: the counters decide
        (at("00000002", 9, 9), "timeline changed from 00000001 to 00000002"),
        (at("00000001", 4, 4), "change counter went back from 5 to 4"),
        (at(None, 4, 9), "change counter went back from 5 to 4"),
        (at("00000001", 5, 3), "plan basis went back from 4 to 3"),
    ],
)
def test_a_break_is_a_new_timeline_or_a_counter_gone_back(
    observed: Lineage, why: str | None
) -> None:
    seen = at("00000001", 5, 4)
    found = broken(seen, observed)
    if why is None:
        assert found is None
    else:
        assert found is not None and why in found


def test_the_highest_state_is_kept_and_an_unknown_timeline_keeps_the_known_one() -> None:
    seen = advanced(at("00000001", 5, 4), at(None, 7, 6))
    assert seen == at("00000001", 7, 6)
    assert broken(seen, at(None, 6, 6)) is not None  # below 7, though above the first 5


def test_the_quarantine_is_one_heartbeat_timeout() -> None:
    assert quarantine_end(100.0, 15.0) == 115.0
