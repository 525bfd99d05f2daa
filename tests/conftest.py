"""Test-wide settings: hypothesis profiles and the PostgreSQL server fixtures.

``HYPOTHESIS_PROFILE=ci`` (set by .ci/run) runs more examples with no
deadline; the default ``dev`` profile keeps the local loop fast.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "dev",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

pytest_plugins = ["tests.support.pg", "tests.support.pgbouncer"]
