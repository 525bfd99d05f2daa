"""The dashboard in a real browser, against a live cluster of worker processes.

Headless Chromium (Debian's ``chromium`` and ``chromium-driver`` packages,
driven over the W3C WebDriver protocol by ``tests/support/webdriver.py``)
loads the page served by ``jobsync.dashboard`` for a site of four worker
processes on PostgreSQL.  The workers and the token counts the page shows,
both in the workers table and in the map's own cells, must be the
database's; a worker killed with SIGKILL must disappear from the map once
the leader has moved its tokens, a worker joining must appear; the page is
then saved as a screenshot: into the test's temporary folder, or, with
``JOBSYNC_UPDATE_SCREENSHOT=1``, as ``docs/images/dashboard.png``, the one the
README and the operator guide show (so a test run leaves the tree as it was).

Skipped with the reason where Chromium or its driver is not installed;
``JOBSYNC_REQUIRE_CHROMIUM=1`` (CI) turns the skip into a failure.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobsync.backends.base import Backend
from jobsync.cli import main
from jobsync.cli.connect import open_cli_backend
from jobsync.dashboard import Dashboard
from tests.support.require import CHROMIUM, unavailable
from tests.support.webdriver import Browser, find_chromium

from .harness import FAST, REPO, TOLERANCE, Cluster, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

DOCS_SCREENSHOT = REPO / "docs" / "images" / "dashboard.png"
TOKENS = 1000
SITE = "production"

PAGE_COUNTS = """
const rows = [...document.querySelectorAll('#workers tbody tr[data-node]')];
return {
  version: window.jobsyncDashboard ? window.jobsyncDashboard.version : null,
  drawn: window.jobsyncDashboard ? window.jobsyncDashboard.counts : null,
  unowned: window.jobsyncDashboard ? window.jobsyncDashboard.unowned : null,
  rows: Object.fromEntries(
    rows.map(r => [r.dataset.node, [Number(r.dataset.tokens), r.dataset.state]])),
  leader: document.getElementById('leader').textContent,
};
"""


@pytest.fixture
def browser() -> Iterator[Browser]:
    if find_chromium() is None:
        unavailable(CHROMIUM, "no Chromium: install Debian's chromium and chromium-driver packages")
    with Browser.start(width=1400, height=1000) as started:
        yield started


@pytest.fixture
def cluster(pg_dsn: str, pg_schema: str, tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(
        workdir=tmp_path, dsn=pg_dsn, schema=pg_schema, tokens=TOKENS, site=SITE, work_ms=20
    ) as running:
        yield running


def database_counts(backend: Backend) -> tuple[dict[str, int], int]:
    """Tokens per owner, and unowned tokens, as the database holds them now."""
    counts: dict[str, int] = {}
    unowned = 0
    for owner in backend.read_cluster(SITE).tokens.owner:
        if owner is None:
            unowned += 1
        else:
            counts[owner] = counts.get(owner, 0) + 1
    return counts, unowned


def shown_matches_database(browser: Browser, backend: Backend) -> dict[str, Any] | None:
    """What the page shows, if it is exactly the database's (else None)."""
    page = browser.execute(PAGE_COUNTS)
    counts, unowned = database_counts(backend)
    if page["drawn"] != counts or page["unowned"] != unowned:
        return None
    shown = {name: tokens for name, (tokens, _) in page["rows"].items() if tokens}
    if shown != counts:
        return None
    page_counts: dict[str, Any] = page
    return page_counts


def test_the_page_shows_the_cluster_and_follows_a_crash(
    browser: Browser, cluster: Cluster, tmp_path: Path
) -> None:
    update = os.environ.get("JOBSYNC_UPDATE_SCREENSHOT") == "1"
    shot = DOCS_SCREENSHOT if update else tmp_path / "dashboard.png"
    procs = [cluster.spawn(f"worker-{i}") for i in range(1, 5)]
    cluster.wait_ready(procs)
    cluster.wait_balanced(procs, timeout=30)
    url = cluster._url(cluster.dsn or "")
    for args in (
        ["render-7", "gpu-%", "worker-%", "--reason", "prefers a GPU"],
        ["etl-eu-42", "eu-%", "--reason", "EU data stays in the EU"],
    ):
        assert main(["locks", "add", *args, "--dsn", url, "--site", SITE]) == 0
    with contextlib.ExitStack() as stack:
        backend = stack.enter_context(contextlib.closing(open_cli_backend(url)))
        check = stack.enter_context(contextlib.closing(open_cli_backend(url)))
        board = stack.enter_context(Dashboard(backend, SITE, port=0))
        browser.get(board.address)
        page = wait_for(
            lambda: shown_matches_database(browser, check), 20, "the page to match the database"
        )
        assert set(page["rows"]) == {p.name for p in procs}
        assert all(state == "live" for _, state in page["rows"].values())
        assert page["unowned"] == 1  # the EU pin matches no worker
        assert page["leader"] == cluster.leader()

        victim = procs[1]
        killed = time.monotonic()
        cluster.kill(victim)
        bound = FAST.crash_bound + TOLERANCE + 1.0  # + the dashboard's poll and the page's
        page = wait_for(
            lambda: (
                (p := shown_matches_database(browser, check))
                and victim.name not in p["drawn"]
                and p
            ),
            bound + 10,
            f"the map to lose {victim.name}",
        )
        took = time.monotonic() - killed
        print(f"the page lost {victim.name} {took:.1f} s after its SIGKILL (bound {bound:g} s)")
        assert page["rows"][victim.name][1] == "dead"
        assert sum(page["drawn"].values()) == TOKENS - 1

        joined = cluster.spawn("worker-5")
        cluster.wait_ready([joined])
        wait_for(
            lambda: (p := shown_matches_database(browser, check)) and "worker-5" in p["drawn"],
            20,
            "the map to show worker-5",
        )
        height = browser.execute("return document.documentElement.scrollHeight")
        browser.resize(1400, int(height) + 120)
        browser.wait_for(
            "return document.querySelectorAll('#timeline li').length", 5, "the timeline"
        )
        browser.screenshot(shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
