"""The Backend contract suite: one set of tests every backend must pass.

A backend proves itself with one fixture.  In its test module::

    @pytest.fixture
    def harness() -> Iterator[MyHarness]:   # a ContractHarness
        ...

    class TestMyBackendContract(BackendContract):
        pass

``BackendContract`` is not collected by itself (its name does not start with
``Test``); the subclass is, and every test runs against the harness.  Each
test works on a fresh site with a unique name (``Scene``), so backends on a
shared database need no cleanup between tests.

Time: tests that must stand exactly on an instant (a heartbeat exactly one
lease after the last is EXPIRED, one instant earlier RENEWED; a deadline
exactly reached evicts; a lock is gone exactly at its expiry) call
``needs_clock`` and are skipped where the harness cannot set the clock.
Everything else, expiry included, runs on every backend with short leases
(``SHORT_LEASE``) and ``harness.wait_until``, which a real-clock harness can
implement with ``wait_by_polling``.

The suite needs pytest; importing ``jobsync.testing`` outside a test run is
fine, running it is not.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from jobsync.backends.base import Backend
from jobsync.testing._contract_capacity import CapacityContract, DrainContract
from jobsync.testing._contract_claims import ClaimContract
from jobsync.testing._contract_handoff import HandoffContract
from jobsync.testing._contract_locks import LockContract
from jobsync.testing._contract_membership import MembershipContract, SiteContract
from jobsync.testing._contract_misc import MaintenanceContract
from jobsync.testing._contract_plans import PlanContract
from jobsync.testing._contract_safety import LostReplyContract, SafetyContract
from jobsync.testing.scene import ContractHarness, Scene

__all__ = ["BackendContract", "ContractHarness", "wait_by_polling"]


def wait_by_polling(backend: Backend, instant: float, step: float = 0.01) -> None:
    """``wait_until`` for a harness whose clock runs by itself: poll ``backend.now()``."""
    while (remaining := instant - backend.now()) > 0:
        time.sleep(min(step, remaining))


class BackendContract(
    SiteContract,
    MembershipContract,
    PlanContract,
    HandoffContract,
    ClaimContract,
    LockContract,
    MaintenanceContract,
    SafetyContract,
    LostReplyContract,
    CapacityContract,
    DrainContract,
):
    """Every contract test; subclass as ``Test...`` and provide a ``harness`` fixture."""

    @pytest.fixture
    def scene(self, harness: ContractHarness) -> Iterator[Scene]:
        made = Scene(harness)
        yield made
        made.close()
