"""The dashboard without a browser: its JSON document and its HTTP endpoints.

On a live two-worker site (SQLite and PostgreSQL): the document agrees with
the rows; the server answers the page, its assets and the state; viewers
long-poll the cache and never reach the database; a change of the site
reaches a waiting viewer as a new version; the server refuses writes and
foreign Host headers, and says so when the database goes away.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from jobsync import Task, token_for
from jobsync.backends.base import Backend
from jobsync.cli import main
from jobsync.cli.connect import open_cli_backend
from jobsync.dashboard import Dashboard, snapshot
from tests.integration.harness import wait_for

from .conftest import SITE, Site, eventually


@pytest.fixture
def site(any_site: Site) -> Site:
    return any_site


@pytest.fixture
def backend(site: Site) -> Iterator[Backend]:
    handle = open_cli_backend(site.url)
    yield handle
    handle.close()


@pytest.fixture
def board(backend: Backend) -> Iterator[Dashboard]:
    with Dashboard(backend, SITE, port=0, poll_interval=0.05) as running:
        yield running


def get(
    board: Dashboard, path: str, method: str = "GET", host: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    _, port = board.httpd.server_address[:2]
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=30)
    try:
        headers = {"Host": host} if host else {}
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def state(board: Dashboard, query: str = "") -> dict[str, Any]:
    status, _, body = get(board, "/api/state" + query)
    assert status == 200
    document: dict[str, Any] = json.loads(body)
    return document


# -- the document ------------------------------------------------------------------------
def test_the_document_agrees_with_the_rows(site: Site, backend: Backend) -> None:
    view = backend.read_cluster(SITE)
    doc = snapshot.build(view, backend.read_history(SITE), hot=[7, 3, 7])
    owners = doc["map"]["owners"]
    assert owners == ["w1", "w2"] and len(doc["map"]["cells"]) == 100
    drawn = Counter(owners[i] for i in doc["map"]["cells"] if i >= 0)
    assert drawn == Counter(o for o in view.tokens.owner if o is not None)
    assert doc["counts"] == dict(drawn)
    assert {n["name"]: n["tokens"] for n in doc["nodes"]} == dict(drawn)
    assert all(n["health"] == "healthy" and n["capacity"] == 1.0 for n in doc["nodes"])
    assert not any(n["drained"] or n["draining"] for n in doc["nodes"])
    special = token_for("special", 100)
    assert doc["map"]["pinned"] == [special]
    assert doc["map"]["pending"] == []
    assert doc["hot"] == [3, 7]
    (lock,) = doc["lock_rows"]
    assert lock["task_id"] == "special" and lock["token"] == special
    assert lock["decides"] and lock["satisfied"] and lock["owner"] == "w2"
    assert doc["leader"] == "w1" and doc["problems"] == []
    assert doc["recent_rebalances"][0]["generation"] == view.site.generation
    leases = [n.lease_expires for n in view.nodes]
    assert doc["next_deadline"] == min(leases) > view.now


@pytest.mark.parametrize(
    ("row", "word"),
    [
        ({"state": "dead"}, "down"),
        ({"state": "evicted"}, "down"),
        ({"state": "leaving"}, "leaving"),
        ({"state": "live", "pending_releases": 3}, "handing off"),
        (
            {"state": "live", "heartbeat_age_sec": 1.6, "lease_expires_in_sec": 1.4},
            "late heartbeat",
        ),
        ({"state": "live", "heartbeat_age_sec": 0.4, "lease_expires_in_sec": 2.6}, "healthy"),
    ],
)
def test_health_in_one_word(row: dict[str, object], word: str) -> None:
    full = {"pending_releases": 0, "heartbeat_age_sec": 0.0, "lease_expires_in_sec": 3.0, **row}
    assert snapshot.health(full) == word


# -- the server ----------------------------------------------------------------------------
def test_the_page_and_its_assets_come_from_the_package(board: Dashboard) -> None:
    status, headers, body = get(board, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'<canvas id="map"' in body and b"/app.js" in body
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    for path, kind in (("/app.js", "text/javascript"), ("/style.css", "text/css")):
        status, headers, body = get(board, path)
        assert status == 200 and headers["Content-Type"].startswith(kind) and body
    assert b"http" not in get(board, "/")[2].replace(b"http-equiv", b"")  # no CDN, no link out
    assert get(board, "/nothing")[0] == 404
    status, headers, body = get(board, "/", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0


def test_state_is_the_document_with_a_version(board: Dashboard, backend: Backend) -> None:
    doc = state(board)
    assert doc["version"] >= 1 and doc["site"] == SITE
    rows = backend.read_cluster(SITE)
    assert doc["generation"] == rows.site.generation
    assert doc["counts"] == Counter(o for o in rows.tokens.owner if o is not None)


def test_the_server_is_read_only_and_local(board: Dashboard) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, headers, _ = get(board, "/api/state", method=method)
        assert status == 405 and headers["Allow"] == "GET, HEAD"
    assert get(board, "/", host="attacker.example")[0] == 421
    assert get(board, "/", host="attacker.example:8080")[0] == 421
    assert get(board, "/", host="localhost:8080")[0] == 200
    assert get(board, "/api/state?after=x")[0] == 400
    assert board.address.startswith("http://127.0.0.1:")


def test_a_change_reaches_a_waiting_viewer(board: Dashboard, site: Site) -> None:
    first = state(board)
    answer: dict[str, Any] = {}

    def wait() -> None:
        answer.update(state(board, f"?after={first['version']}&wait=20"))

    viewer = threading.Thread(target=wait)
    viewer.start()
    site.jobs["w1"].register_lock("late", ["w1"], reason="test")
    viewer.join(30)
    assert not viewer.is_alive()
    assert answer["version"] > first["version"]
    eventually(lambda: any(r["task_id"] == "late" for r in state(board)["lock_rows"]))


def test_viewers_never_reach_the_database(board: Dashboard, backend: Backend) -> None:
    before = backend.statistics().get("read_cluster", 0)
    reads = board.poller.reads
    for _ in range(30):
        state(board)
    calls = backend.statistics().get("read_cluster", 0) - before
    assert calls == board.poller.reads - reads  # every full read is the poller's own
    assert calls < 30


def test_a_quiet_site_is_not_read_again_until_something_changes(
    backend: Backend, site: Site
) -> None:
    board = Dashboard(backend, SITE, port=0, poll_interval=0.01, max_age=3600)
    try:
        board.poller.refresh()
        board.poller._deadline = None  # no lease end in view: only a change re-reads
        assert [board.poller.step() for _ in range(5)] == [False] * 5
        site.jobs["w1"].register_lock("again", ["w1"])
        eventually(board.poller.step)
    finally:
        board.httpd.server_close()


def test_an_unreachable_database_is_shown_not_hidden(site: Site) -> None:
    handle = open_cli_backend(site.url)
    with Dashboard(handle, SITE, port=0, poll_interval=0.05) as board:
        before = state(board)
        assert before.get("error") is None
        handle.close()
        eventually(lambda: state(board).get("error"))
        stale = state(board)
        assert stale["stale"] is True and stale["counts"] == before["counts"]


def test_the_command_serves_until_interrupted(
    site: Site, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: dict[str, Any] = {}

    def interrupt(self: Dashboard) -> None:
        seen["doc"] = state(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(Dashboard, "wait", interrupt)
    code = main(["dashboard", "--dsn", site.url, "--site", SITE, "--port", "0"])
    out = capsys.readouterr().out
    assert code == 0 and f"jobsync dashboard for site {SITE!r}: http://127.0.0.1:" in out
    assert seen["doc"]["site"] == SITE and sum(seen["doc"]["counts"].values()) == 100


def test_a_taken_port_is_one_line(
    site: Site, board: Dashboard, capsys: pytest.CaptureFixture[str]
) -> None:
    _, port = board.httpd.server_address[:2]
    code = main(["dashboard", "--dsn", site.url, "--site", SITE, "--port", str(port)])
    err = capsys.readouterr().err
    assert code == 2 and f"cannot listen on 127.0.0.1:{port}" in err and err.count("\n") == 1


def test_pinned_tasks_are_claimable_where_the_map_says(board: Dashboard, site: Site) -> None:
    doc = state(board)
    special = token_for("special", 100)
    owner = doc["map"]["owners"][doc["map"]["cells"][special]]
    assert site.jobs[owner].can_claim_task(Task("special"))


def test_a_drain_shows_on_the_worker_row(board: Dashboard, backend: Backend) -> None:
    assert backend.set_drain(SITE, "w2", True, duration=600, note="by ops: disk swap") is not None

    def drained() -> dict[str, Any] | None:
        rows = {n["name"]: n for n in state(board)["nodes"]}
        return rows["w2"] if rows["w2"]["drained"] and rows["w2"]["tokens"] == 0 else None

    row = wait_for(drained, 10, "w2 drained on the page's document")
    assert row["draining"] is False and row["drain_note"] == "by ops: disk swap"
    assert row["drain_until"] > state(board)["now"]
    w1 = next(n for n in state(board)["nodes"] if n["name"] == "w1")
    assert w1["drained"] is False and w1["tokens"] == 99  # the pin on w2 is left unowned
