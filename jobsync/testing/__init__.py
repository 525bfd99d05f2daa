"""Testing kit: a settable clock, scene set-ups and the Backend contract suite.

``ManualClock`` needs nothing; ``jobsync.testing.backend_contract`` and
``jobsync.testing.scene`` need pytest (the ``test`` extra).  Assertions in the
contract modules are rewritten by pytest for readable failures.
"""

from __future__ import annotations

from jobsync.testing.clock import ManualClock

try:
    import pytest
except ImportError:  # pragma: no cover - the clock works without pytest
    pass
else:
    pytest.register_assert_rewrite(
        "jobsync.testing.backend_contract",
        "jobsync.testing.scene",
        "jobsync.testing._contract_claims",
        "jobsync.testing._contract_handoff",
        "jobsync.testing._contract_locks",
        "jobsync.testing._contract_membership",
        "jobsync.testing._contract_misc",
        "jobsync.testing._contract_plans",
        "jobsync.testing._contract_safety",
    )

__all__ = ["ManualClock"]
