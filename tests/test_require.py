"""A missing outside part skips its tests on a developer's machine and fails them in CI."""

from __future__ import annotations

import pytest

from tests.support.require import CHROMIUM, unavailable


def test_a_missing_part_skips_when_not_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CHROMIUM, raising=False)
    with pytest.raises(pytest.skip.Exception, match="no Chromium"):
        unavailable(CHROMIUM, "no Chromium")


def test_a_missing_part_fails_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CHROMIUM, "1")
    with pytest.raises(pytest.fail.Exception, match="JOBSYNC_REQUIRE_CHROMIUM=1 but no Chromium"):
        unavailable(CHROMIUM, "no Chromium")
