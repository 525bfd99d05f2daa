"""Skip a test whose outside part is missing here, or fail it where it is required.

A developer's machine may lack PostgreSQL binaries, PgBouncer, Chromium or the
network to install the original jobsync: those tests skip, saying what is
missing.  CI sets ``JOBSYNC_REQUIRE_<PART>=1`` for each part (``.ci/run``), and
there a missing part fails the test instead, so nothing is skipped silently.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

POSTGRES = "JOBSYNC_REQUIRE_POSTGRES"
PGBOUNCER = "JOBSYNC_REQUIRE_PGBOUNCER"
CHROMIUM = "JOBSYNC_REQUIRE_CHROMIUM"
ORIGINAL = "JOBSYNC_REQUIRE_ORIGINAL"


def unavailable(env: str, reason: str) -> NoReturn:
    """Fail when ``env`` is ``1`` (the part is required here), else skip."""
    if os.environ.get(env) == "1":
        pytest.fail(f"{env}=1 but {reason}", pytrace=False)
    pytest.skip(reason)
