"""``jobsync drain`` and ``jobsync undrain`` against live Jobs, on SQLite and PostgreSQL.

The populated site has two workers, w1 and w2, and a lock pinning 'special' to
w2 alone: draining w2 would leave that token with no eligible worker, so it is
refused (one line, exit 1) unless ``--force``.
"""

from __future__ import annotations

import argparse

import pytest

from jobsync.cli.main import build_parser
from jobsync.runtime.maintenance import drain_node

from .conftest import SITE, Site, eventually


def held(site: Site, name: str) -> int:
    return len(site.jobs[name].my_tokens)


def drained_rows(site: Site) -> dict[str, bool]:
    db = site.jobs["w1"]._require_backend()
    now, rows = db.read_nodes(SITE)
    return {r.name: r.is_drained(now) for r in rows}


def test_a_drain_that_strands_a_pinned_token_is_refused_in_one_line(
    fresh_site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    result = fresh_site.cli(capsys, "drain", "w2")
    assert result.code == 1 and result.out == ""
    assert result.err.count("\n") == 1
    assert "drain of 'w2' refused: 1 pinned tokens would have no eligible worker" in result.err
    assert drained_rows(fresh_site) == {"w1": False, "w2": False}


def test_drain_wait_status_and_undrain(any_site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    site = any_site
    result = site.cli(
        capsys, "drain", "w2", "--force", "--reason", "disk swap", "--by", "ops", "--wait", "10"
    )
    assert result.code == 0, result.err
    assert result.out.strip() == (
        f"drained w2 of site {SITE!r} until undrained (by ops: disk swap): it holds no token"
    )
    # forced: the token pinned to w2 alone is unowned while w2 is drained
    eventually(lambda: held(site, "w2") == 0 and held(site, "w1") == 99)
    eventually(lambda: site.jobs["w2"].maintenance == "drained")

    status = site.cli(capsys, "status")
    line = next(x for x in status.out.splitlines() if x.startswith("w2 "))
    assert "live, drained" in line
    nodes = site.cli(capsys, "status", "--json").json()["nodes"]
    w2 = next(n for n in nodes if n["name"] == "w2")
    assert (w2["maintenance"], w2["capacity"], w2["tokens"]) == ("drained", 1.0, 0)
    assert w2["drain_note"] == "by ops: disk swap" and w2["drain_until"] is None
    history = site.cli(capsys, "history", "--json").json()["rebalances"]
    assert any("drain w2 (by ops: disk swap)" in r["trigger"] for r in history)

    again = site.cli(capsys, "drain", "w1")
    assert again.code == 1
    assert "w2 already drained" in again.err and "no other undrained worker" in again.err

    back = site.cli(capsys, "undrain", "w2", "--json")
    assert back.code == 0
    assert back.json()["drained"] is False and back.json()["node"] == "w2"
    eventually(lambda: held(site, "w2") == 50 and held(site, "w1") == 50)
    assert drained_rows(site) == {"w1": False, "w2": False}


def test_a_drain_for_a_duration_says_until_when(
    fresh_site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    result = fresh_site.cli(capsys, "drain", "w1", "--for", "30m", "--json")
    assert result.code == 0, result.err
    data = result.json()
    assert data["drain_until"] == pytest.approx(data["drained_at"] + 1800)
    assert data["drained"] is True and data["live"] is True
    text = fresh_site.cli(capsys, "undrain", "w1")
    assert text.code == 0 and "gives it its share back" in text.out


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["drain", "ghost", "--force"], 2, "no node named 'ghost'"),
        (["undrain", "ghost"], 2, "no node named 'ghost'"),
        (["drain", "w1", "--wait", "-1"], 1, "--wait must be a non-negative"),
    ],
)
def test_bad_drains_are_one_line_errors(
    fresh_site: Site, capsys: pytest.CaptureFixture[str], args: list[str], code: int, message: str
) -> None:
    result = fresh_site.cli(capsys, *args)
    assert result.code == code and message in result.err and result.err.count("\n") == 1
    assert drained_rows(fresh_site) == {"w1": False, "w2": False}


def test_a_bad_duration_is_a_usage_error(
    fresh_site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    result = fresh_site.cli(capsys, "drain", "w1", "--for", "soon")
    assert result.code == 2 and "argument --for: invalid duration 'soon'" in result.err
    assert drained_rows(fresh_site) == {"w1": False, "w2": False}


def test_the_library_call_refuses_what_the_command_refuses(fresh_site: Site) -> None:
    from jobsync.runtime.maintenance import DrainRefused

    with pytest.raises(DrainRefused, match="pinned tokens"):
        drain_node(fresh_site.url, SITE, "w2")
    assert drained_rows(fresh_site) == {"w1": False, "w2": False}


def test_every_option_of_drain_and_undrain_has_help() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("drain", "undrain"):
        for action in sub.choices[name]._actions:
            assert action.help, (name, action.dest)
