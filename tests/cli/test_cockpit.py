"""``jobsync explain`` and the what-if ``jobsync plan`` on a live site, SQLite and PostgreSQL.

Each test gets its own two-worker site (``populated``: w1 the elder, 'special'
pinned to w2, tasks 0-9 done).  The what-if is checked against the real
leader: after predicting a join, the worker joins and the owners the leader
commits are the ones predicted.
"""

from __future__ import annotations

import contextlib
import re
import shlex
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from jobsync import Job, Task, token_for
from jobsync.cli import main
from jobsync.cli.connect import open_cli_backend

from .conftest import FAST, SITE, Result, Site, eventually, run


@pytest.fixture
def site(any_site: Site) -> Site:
    return any_site


def cli(site: Site, capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    return run(capsys, *args, "--dsn", site.url, "--site", SITE)


def owners(site: Site, capsys: pytest.CaptureFixture[str]) -> dict[int, str | None]:
    rows = cli(site, capsys, "tokens", "--json").json()["tokens"]
    return {r["token"]: r["owner"] for r in rows}


def incarnation(job: Job) -> int:
    return int(str(job.get_coordination_status()["incarnation"]))


# -- explain ---------------------------------------------------------------------------
def test_explain_names_token_owner_pin_and_claim(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    w1, w2 = site.jobs["w1"], site.jobs["w2"]
    open_task = next(f"open-{i}" for i in range(1000) if w1.can_claim_task(Task(f"open-{i}")))
    assert w1.add_task(Task(open_task))
    result = cli(site, capsys, "explain", "special", "3", open_task, "never-seen", "--json")
    assert result.code == 0, result.err
    special, done, claimed, unseen = result.json()["tasks"]

    assert special["token"] == token_for("special", 100)
    assert special["owner"] == "w2" and special["owner_state"] == "live"
    assert special["epoch"] >= 1 and special["incarnation"] == incarnation(w2)
    pin = special["pin"]
    assert pin["lock"] == "special" and pin["patterns"] == ["w2"]
    assert pin["matched_pattern"] == "w2" and pin["pattern_index"] == 0
    assert pin["fallback"] is False and pin["eligible"] == ["w2"]

    owner_of_3 = "w1" if w1.can_claim_task(Task(3)) else "w2"
    assert done["owner"] == owner_of_3
    assert done["claim"]["status"] == "done" and done["claim"]["node"] == owner_of_3
    assert done["pin"]["lock"] is None and done["pin"]["eligible"] == ["w1", "w2"]

    assert claimed["claim"]["status"] == "claimed" and claimed["claim"]["node"] == "w1"
    assert claimed["claim"]["claimer_lease"] == "running"
    assert claimed["claim"]["incarnation"] == incarnation(w1)
    assert unseen["claim"]["status"] == "unclaimed"

    text = cli(site, capsys, "explain", "special", open_task)
    assert text.code == 0
    assert "'w2' decides (first choice): 1 eligible (w2)" in text.out
    assert f"claimed by w1 (incarnation {incarnation(w1)}), in progress" in text.out


def test_explain_reports_the_fallback_and_a_pin_nobody_matches(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(site, capsys, "locks", "add", "gpu-task", "gpu-%", "w1").code == 0
    assert cli(site, capsys, "locks", "add", "eu-task", "eu-%").code == 0
    w1 = site.jobs["w1"]
    eventually(lambda: w1.can_claim_task(Task("gpu-task")))
    entries = cli(site, capsys, "explain", "gpu-task", "eu-task", "--json").json()["tasks"]
    gpu, eu = entries
    assert gpu["pin"]["fallback"] is True and gpu["pin"]["matched_pattern"] == "w1"
    assert gpu["pin"]["eligible"] == ["w1"] and gpu["owner"] == "w1"
    assert eu["pin"]["matched_pattern"] is None and eu["pin"]["eligible"] == []
    eventually(
        lambda: (
            cli(site, capsys, "explain", "eu-task", "--json").json()["tasks"][0]["owner"] is None
        )
    )
    text = cli(site, capsys, "explain", "gpu-task", "eu-task").out
    assert "'gpu-%' matches no live worker, so the fallback 'w1' decides" in text
    assert "no pattern of ['eu-%'] matches a live worker: the token stays unowned" in text


def test_explain_refuses_a_bad_date_in_one_line(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    result = cli(site, capsys, "explain", "x", "--date", "yesterday")
    assert result.code == 2 and "expected a date YYYY-MM-DD" in result.err
    assert "Traceback" not in result.err


# -- what-if -----------------------------------------------------------------------------
def test_plan_without_changes_moves_nothing_and_writes_nothing(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    before = cli(site, capsys, "status", "--json").json()
    report = cli(site, capsys, "plan", "--add", "w9", "--pin", "special=w1", "--json").json()
    assert report["moved"] > 0
    same = cli(site, capsys, "plan", "--json").json()
    assert same["moved"] == 0 and same["moves_without_changes"] == 0
    assert same["unowned_after"] == [] and same["broken_pins"] == []
    after = cli(site, capsys, "status", "--json").json()
    assert after["generation"] == before["generation"]
    assert after["change_counter"] == before["change_counter"]
    assert [
        lk["task_id"] for lk in cli(site, capsys, "locks", "list", "--json").json()["locks"]
    ] == ["special"]


def test_plan_predicts_what_the_leader_does_when_a_worker_joins(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    held = Counter(owners(site, capsys).values())
    report = cli(site, capsys, "plan", "--add", "w3", "--json").json()
    rows = {w["name"]: w for w in report["workers"]}
    assert rows["w3"]["change"] == "added" and rows["w3"]["tokens_now"] == 0
    assert sorted(w["tokens_after"] for w in rows.values()) == [33, 33, 34]
    assert report["moved"] == report["lower_bound"] == rows["w3"]["gains"]
    for name in ("w1", "w2"):
        assert rows[name]["tokens_now"] == held[name]
        assert rows[name]["tokens_now"] - rows[name]["gives_up"] == rows[name]["tokens_after"]
    text = cli(site, capsys, "plan", "--add", "w3").out
    assert f"tokens moved:  {report['moved']} (fewest possible: {report['lower_bound']})" in text

    with Job("w3", SITE, site.url, coordination_config=FAST, handle_sigterm=False):
        predicted = {name: w["tokens_after"] for name, w in rows.items()}
        eventually(lambda: Counter(owners(site, capsys).values()) == predicted)


def test_plan_removing_the_pinned_worker_breaks_its_pin(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    token = token_for("special", 100)
    report = cli(site, capsys, "plan", "--remove", "w2", "--json").json()
    assert report["nodes_after"] == ["w1"]
    assert report["unowned_after"] == [token]
    assert report["broken_pins"] == [{"token": token, "task_id": "special", "patterns": ["w2"]}]
    rows = {w["name"]: w for w in report["workers"]}
    assert rows["w1"]["tokens_after"] == 99 and rows["w2"]["tokens_after"] == 0
    assert rows["w2"]["change"] == "removed"
    text = cli(site, capsys, "plan", "--remove", "w2").out
    assert f"broken pins:   token {token} (task 'special') -> ['w2']" in text


def test_plan_with_a_pin_and_a_capacity(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    task = next(f"t{i}" for i in range(1000) if site.jobs["w2"].can_claim_task(Task(f"t{i}")))
    pinned = cli(site, capsys, "plan", "--pin", f"{task}=w1", "--json").json()
    assert pinned["changes"]["pin"] == {task: ["w1"]}
    # the pinned token moves to w1, and w1 gives one unpinned token back: still 50/50
    rows = {w["name"]: w for w in pinned["workers"]}
    assert pinned["moved"] == 2 == pinned["lower_bound"]
    assert [(w["gains"], w["gives_up"], w["tokens_after"]) for w in rows.values()] == [
        (1, 1, 50)
    ] * 2
    weighted = cli(site, capsys, "plan", "--capacity", "w1=3", "--json").json()
    rows = {w["name"]: w for w in weighted["workers"]}
    assert (rows["w1"]["tokens_after"], rows["w2"]["tokens_after"]) == (75, 25)
    assert rows["w1"]["capacity"] == 3.0 and rows["w2"]["capacity"] == 1.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--remove", "w9"), "--remove 'w9': not a live worker"),
        (("--add", "w1"), "--add 'w1': already a live worker"),
        (("--pin", "no-equals"), "expected TASK=PATTERN"),
        (("--pin", "t=bad\\"), "ends with an unescaped backslash"),
        (("--capacity", "w1=0"), "capacity of 'w1' must be a finite number"),
        (("--capacity", "w1=lots"), "'lots' is not a number"),
        (("--capacity", "w7=2"), "--capacity 'w7': not a worker of the plan"),
    ],
)
def test_plan_refuses_bad_changes_in_one_line(
    site: Site, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    result = cli(site, capsys, "plan", *args)
    assert result.code == 2, result.out
    assert message in result.err and result.err.count("\n") == 1, result.err


def test_cockpit_commands_need_a_site_that_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with contextlib.ExitStack():
        url = f"sqlite:///{tmp_path / 'empty.db'}"
        assert main(["migrate", "--dsn", url]) == 0
        for command in (["explain", "x"], ["plan"], ["dashboard", "--port", "0"]):
            result = run(capsys, *command, "--dsn", url, "--site", "nowhere")
            assert result.code == 2 and "site 'nowhere' does not exist" in result.err, command


# -- the operator guide's examples ----------------------------------------------------------
GUIDE = Path(__file__).resolve().parents[2] / "docs" / "OPERATOR_GUIDE.md"
VARYING = re.compile(r"(incarnation|epoch|generation) \d+|\d{4}-\d\d-\d\d")


@contextlib.contextmanager
def guide_site(url: str) -> Iterator[dict[str, Job]]:
    """The guide's scene: worker-01 (with three locks), worker-02 and gpu-01, 1,000 tokens,
    two tasks done, one in progress."""
    config = attrs.evolve(FAST, total_tokens=1000)
    with contextlib.ExitStack() as stack:
        jobs: dict[str, Job] = {}
        for name in ("worker-01", "worker-02", "gpu-01"):
            job = Job(name, "production", url, coordination_config=config, handle_sigterm=False)
            jobs[name] = stack.enter_context(job)
            if name == "worker-01":
                job.register_lock("render-7", ["gpu-%"], reason="needs a GPU")
                job.register_lock("report-9", ["eu-%", "worker-%"], reason="prefer the EU group")
                job.register_lock("etl-eu", ["eu-%"], reason="EU data stays in the EU")
        eventually(lambda: jobs["gpu-01"].can_claim_task(Task("render-7")))
        for task in ("render-7", "report-9", "order-1002"):
            eventually(lambda: any(j.can_claim_task(Task(task)) for j in jobs.values()))
            job = next(j for j in jobs.values() if j.can_claim_task(Task(task)))
            assert job.add_task(Task(task))
            if task != "order-1002":
                assert job.complete(Task(task))
        yield jobs


def test_the_operator_guide_shows_what_the_commands_print(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    examples = re.findall(
        r"```text\n\$ (jobsync (?:explain|plan) [^\n]*)\n(.*?)\n```", GUIDE.read_text(), re.S
    )
    assert len(examples) == 3
    url = f"sqlite:///{tmp_path / 'guide.db'}"
    with guide_site(url):
        for command, shown in examples:
            result = run(capsys, *shlex.split(command)[1:], "--dsn", url)
            assert result.code == 0, result.err
            assert VARYING.sub("#", result.out.rstrip()) == VARYING.sub("#", shown), command


def test_a_drained_worker_is_planned_as_the_leader_plans_it(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    backend = open_cli_backend(site.url)
    try:
        assert backend.set_drain(SITE, "w1", True, note="by ops: kernel upgrade") is not None
        eventually(lambda: "w1" not in owners(site, capsys).values())
        report = cli(site, capsys, "plan", "--json").json()
        assert report["nodes_now"] == ["w2"] and report["moved"] == 0
        back = cli(site, capsys, "plan", "--add", "w1", "--json").json()
        assert {w["name"]: w["tokens_after"] for w in back["workers"]} == {"w1": 50, "w2": 50}
        assert cli(site, capsys, "plan", "--remove", "w1").code == 2
        special = cli(site, capsys, "explain", "3", "--json").json()["tasks"][0]
        assert special["pin"]["eligible"] == ["w2"] and special["owner"] == "w2"
    finally:
        backend.close()
