"""One clock type family: the runtime's Clock protocol, the system clock, ManualClock."""

from __future__ import annotations

import pytest

from jobsync.runtime import clock as clocks
from jobsync.testing import ManualClock


def test_manual_clock_is_a_runtime_clock_and_a_callable_one() -> None:
    clock = ManualClock(start=50.0)
    assert isinstance(clock, clocks.Clock)
    assert isinstance(clocks.SystemClock(), clocks.Clock)
    assert clock.now() == clock() == 50.0
    assert clock.advance(2.5) == 52.5
    clock.set(60.0)
    assert clock.now() == clock() == 60.0


def test_manual_clock_never_goes_back() -> None:
    clock = ManualClock(start=10.0)
    with pytest.raises(ValueError):
        clock.advance(-1.0)
    with pytest.raises(ValueError):
        clock.set(9.0)
    assert clock.now() == 10.0


def test_the_runtime_defines_no_clock_of_its_own_to_move_by_hand() -> None:
    assert not hasattr(clocks, "ManualClock")
