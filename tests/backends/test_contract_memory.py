"""The shared Backend contract on the memory backend (a ManualClock for time)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jobsync.backends.base import Backend
from jobsync.backends.memory import MemoryStore
from jobsync.testing.backend_contract import BackendContract
from jobsync.testing.clock import ManualClock


class MemoryHarness:
    """One store on one settable clock; every ``connect`` is a new handle."""

    controls_clock = True

    def __init__(self) -> None:
        self.clock = ManualClock()
        self.store = MemoryStore(clock=self.clock)

    def connect(self, client: str) -> Backend:
        return self.store.connect(client)

    def set_time(self, instant: float) -> None:
        self.clock.set(instant)

    def wait_until(self, instant: float) -> None:
        if self.clock() < instant:
            self.clock.set(instant)


@pytest.fixture
def harness() -> Iterator[MemoryHarness]:
    yield MemoryHarness()


class TestMemoryContract(BackendContract):
    """Every contract test, unchanged, on the memory backend."""
