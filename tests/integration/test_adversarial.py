"""Adversarial real-process faults: the defects a hostile review found, proved fixed.

Same harness as ``test_faults.py`` (real worker processes, a PostgreSQL cluster
the test owns, ``History`` as the checker); each test is built so that it fails
if its defect comes back (see "Teeth" below).

1. A duplicate name that gives up.  Worker ``x`` is cut off from the database
   (black hole) while inside its local lease; a second process named ``x``
   registers (taking the row over, fenced until the old lease ends), then gives
   up (``wait_on_enter`` runs out, or SIGINT) and deregisters.  The old
   incarnation's tokens must stay out of everyone's reach until its lease is
   over: never two claimers.
2. A user transaction held open.  The leader completes a task in its own
   transaction, calls ``job.release(task)`` (no connection) inside it, and keeps
   it open for 10 s while a follower is SIGKILLed and a new worker joins: every
   heartbeat keeps flowing, the crash heals and the join completes within the
   usual bounds, and the release returns or raises ``LockTimeout`` in about the
   lock timeout (never hangs).
3. SIGTERM when the drain cannot finish: during a black hole of the worker's
   traffic, and after its node was superseded.  The process ends within
   ``drain_timeout_sec`` + 2 s; its tokens move by the lease rules.
4. SIGTERM inside a held user transaction: the claim row that the worker's
   deregistration and the leader's reap of its death skipped (locked) must be
   reaped once the transaction is gone, on a site where nothing else changes
   (found here: the leader reaped only inside a plan, so such a claim stayed
   until the next membership change).

Timings as in ``test_faults.py`` (heartbeat 0.5 s, timeout 2 s, margin 0.5 s),
except where a test says why.  Every test prints one ``ADVERSARIAL {...}`` line
of measured numbers (``pytest -rP``) before asserting on them.

Teeth (by hand; see the harness docstring).  Against the library from before the
fixes (``git archive e3a5f86 jobsync | tar -x -C DIR``, ``JOBSYNC_IT_LIBRARY=DIR``):

- 1 fails on overlaps: the duplicate's deregistration deleted the row and a/b got
  x's tokens about 1 s after the cut, 2.5 s before the fence, while x still
  answered True (21 tokens, 0.15 s each);
- 2 fails: ``job.release`` inside the transaction hangs; the heartbeats of h, a
  and b stop for 18-20 s (a's claim of the held task waits on its row lock), the
  SIGKILL never heals and the join never completes;
- 3a and 3b fail: the process is still running 10 s after SIGTERM;
- 4 fails against the library of commit 6f72774 too (its leader reaps only inside
  a plan): the dead incarnation's claim is still there 7 s after the process ended.

With ``JOBSYNC_IT_DEFENCES_OFF=sigterm_deadline`` (the current library, its
SIGTERM deadline off) 3a fails the same way; 3b still passes (a superseded node
is done, so the watchdog ends the process without needing the deadline).
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.support.pg import OwnedPgServer

from .harness import FAST, TOLERANCE, Cluster, History, Proc, Timing, cluster, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

TOKENS = 64
CRASH = FAST.crash_bound + TOLERANCE  # 3 s + 1 s
GRACEFUL = FAST.GRACEFUL_BOUND + TOLERANCE  # 1 s + 1 s
SAMPLE_SLACK = 0.05
"""Seconds between a lease's end and the worker's sample that noticed it, at most."""


def report(name: str, **numbers: Any) -> None:
    print(f"ADVERSARIAL {json.dumps({'scenario': name, **numbers}, default=str)}", flush=True)


def start(c: Cluster, names: list[str], **kwargs: Any) -> list[Proc]:
    procs = [c.spawn(name, **kwargs) for name in names]
    c.wait_ready(procs)
    return procs


def incarnation(c: Cluster, proc: Proc) -> int:
    """The incarnation ``proc`` last reported (its ``status`` log)."""
    for entry in reversed(c.logged(proc, "status")):
        inc = (entry["info"] or {}).get("incarnation")
        if inc is not None:
            return int(inc)
    raise AssertionError(f"{proc.name} logged no incarnation")


def exit_info(c: Cluster, proc: Proc) -> dict[str, Any]:
    exits = c.logged(proc, "exit")
    return (exits[-1]["info"] or {}) if exits else {}


def row_summary(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """A node row as reported: incarnation, state, and how much of its fence is left."""
    if row is None:
        return None
    fence = row["fence_until"]
    left = None if fence is None else round(fence - row["now"], 3)
    return {"incarnation": row["incarnation"], "state": row["state"], "fence_left_s": left}


def check_safety(h: History) -> None:
    assert h.duplicates == [], h.duplicates[:5]
    overlaps = h.overlaps()
    assert overlaps == [], overlaps[:5]
    assert h.epoch_violations() == []


# -- 1 ------------------------------------------------------------------------------------------
DUP = Timing(heartbeat=0.5, timeout=4.0, margin=0.5)
"""A 3.5 s local lease: the cut-off ``x`` still answers True well after the duplicate
has started, registered and given up (about 1 s), so a hand-off at deregistration
would overlap it for seconds, not by a race of milliseconds."""
DUP_LEASE = DUP.timeout - DUP.margin


@pytest.mark.parametrize("gives_up", ["wait_on_enter", "sigint"])
def test_duplicate_that_gives_up_keeps_the_fence(
    fault_server: OwnedPgServer, tmp_path: Path, gives_up: str
) -> None:
    """``x`` is black-holed (idle: every task done, so it only samples what it may
    claim); a second ``x`` starts, registers, gives up and deregisters while the old
    one is still inside its lease.  No instant with two claimers; the old x's tokens
    move only after its lease on the database (the fence); the old x, back, stops."""
    with cluster(workdir=tmp_path, dsn=fault_server.dsn, tasks=300, tokens=TOKENS, timing=DUP) as c:
        proxy = c.proxy()
        ab = start(c, ["a", "b"])
        x = c.spawn("x", proxy=proxy, app_direct=True)
        c.wait_ready([x])
        c.wait_balanced([*ab, x], 10)
        c.finish()  # every task done: the workers idle, sampling what they may claim
        c.wait_balanced([*ab, x], 10, "after the tasks were done")
        held = c.current_sets()[x.instance]
        old = incarnation(c, x)
        cut = c.now()
        proxy.partition("blackhole")
        c.fault("x black-holed", cut, [x])
        # The duplicate connects directly; with a tiny wait_on_enter it gives up on
        # its own (TimeoutError), else it waits and gets SIGINT once registered.
        dup = c.spawn("x", wait_on_enter=0.5 if gives_up == "wait_on_enter" else 60)
        row = wait_for(
            lambda: (r := c.node_row("x")) is not None and r["incarnation"] != old and r,
            10,
            "the duplicate to register",
            every=0.005,
        )
        registered = c.now()
        if gives_up == "sigint":
            c.signal(dup, signal.SIGINT)
        c.wait_exits([dup], 10)
        assert dup.exited_at is not None
        left_row = c.node_row("x")  # after the duplicate deregistered
        fence = row["fence_until"]
        # a and b take x's tokens over, by the lease rules...
        c.wait_balanced(ab, DUP.timeout + 1 + TOLERANCE + 2, "a and b to take x's tokens")
        balanced = c.now()
        # ... and the old x, back in touch, learns it was superseded (or comes back).
        proxy.heal()
        healed = c.now()
        c.fault("x heals", healed, [x])
        wait_for(
            lambda: not x.alive() or c.balanced([*ab, x]),
            15,
            "the old x to stop or rejoin after the heal",
        )
        c.reap()
        h = c.history()
        others_start = min(
            (r.start for r in h.runs if r.token in held and r.instance != x.instance and
             r.start >= cut),
            default=math.inf,
        )  # fmt: skip
        x_runs = [r for r in h.runs_of(x.instance) if r.start < cut]
        x_stopped = max(r.end for r in x_runs if r.token in held)
        old_lease_end = x_stopped  # the old x's own view, at most its lease on the database
        overlaps = h.overlaps()
        report(
            f"1 duplicate gives up ({gives_up})",
            x_tokens=len(held),
            dup_registered_after_cut_s=round(registered - cut, 3),
            dup_exited_after_cut_s=round(dup.exited_at - cut, 3),
            dup_exit=(dup.popen.returncode, exit_info(c, dup).get("error")),
            fence_after_cut_s=None if fence is None else round(fence - cut, 3),
            row_after_deregistration=row_summary(left_row),
            old_x_stopped_answering_after_cut_s=round(x_stopped - cut, 3),
            others_got_x_tokens_after_cut_s=round(others_start - cut, 3),
            others_got_them_after_fence_s=None if fence is None else round(others_start - fence, 3),
            balanced_after_cut_s=round(balanced - cut, 3),
            old_x_after_heal={
                "alive": x.alive(),
                "returncode": x.popen.returncode,
                "conflict_logged": bool(c.logged(x, "conflict")),
                "exit": exit_info(c, x),
            },
            overlaps=len(overlaps),
            overlap_s=round(max((min(p.end, q.end) - q.start for p, q in overlaps), default=0), 3),
        )
        # Guarantee 1 across the whole scenario: never two claimers of one token.
        check_safety(h)
        # The scenario happened as meant: the duplicate took the row over while the old
        # x was inside its lease, and gave up (deregistered) before that lease ended.
        assert fence is not None and fence > dup.exited_at, (fence, dup.exited_at)
        assert old_lease_end > dup.exited_at
        # The old x stopped answering on its own clock (its local lease) ...
        assert x_stopped - cut <= DUP_LEASE + SAMPLE_SLACK
        # ... and nobody else could claim its tokens until its lease on the database
        # was over (the fence): the deregistration handed nothing on early.
        assert others_start >= fence - 0.005, (others_start, fence)
        assert others_start >= x_stopped
        # The heal of x's tokens still follows the crash bound from the cut.
        assert others_start - cut <= DUP.crash_bound + TOLERANCE
        # The old x, back in touch, never claims again under its old incarnation.
        late = [r for r in h.runs_of(x.instance) if r.start >= cut]
        assert all(r.start >= healed for r in late), late[:3]


# -- 2 ------------------------------------------------------------------------------------------
HOLD = 10.0
"""Seconds the leader's user transaction stays open, holding a completed claim row."""
LOCK_TIMEOUT = 0.5
"""jobsync's session lock_timeout on PostgreSQL (the default)."""
BEAT_BOUND = FAST.heartbeat + 1.0
"""No worker goes longer than one heartbeat interval plus a second without a heartbeat
recorded (the normal gap is one interval; the second is a loaded CI machine's and
a verb's wait of up to the lock timeout on the shared connection)."""


def _logged_one(c: Cluster, proc: Proc, kind: str, timeout: float) -> dict[str, Any] | None:
    """The first ``kind`` entry of ``proc``, waited for up to ``timeout`` (None if none)."""
    try:
        return wait_for(lambda: (found := c.logged(proc, kind)) and found[0], timeout, kind)
    except AssertionError:
        return None


def test_user_transaction_held_open_with_a_release_inside(
    fault_server: OwnedPgServer, tmp_path: Path
) -> None:
    """The leader ``h`` completes a task in its own transaction and keeps it open for
    10 s.  Inside it, ``h`` pins the task's token to follower ``a`` (so ``a`` owns it
    and tries to claim the task, whose claim row ``h``'s transaction holds locked),
    then calls ``job.release(task)`` without a connection.  Meanwhile follower ``c``
    is SIGKILLed and a new worker ``n`` joins.  Every heartbeat keeps flowing (``a``'s
    too), the crash heals and the join completes within the usual bounds, the release
    comes back in about the lock timeout, and every task is done exactly once."""
    with cluster(
        workdir=tmp_path, dsn=fault_server.dsn, tasks=5_000, tokens=TOKENS, work_ms=20
    ) as c:
        h = c.spawn("h", holder=True, release_inside=True, pin_to="a")
        c.wait_ready([h])  # the oldest: the leader
        followers = start(c, ["a", "b", "c"])
        everyone = [h, *followers]
        c.wait_balanced(everyone, 10)
        assert c.leader() == "h"
        beats = c.heartbeats()
        try:
            watched = c.now()
            wait_for(lambda: c.done_count() > 200, 30, "tasks flowing")
            c.hold_transaction(HOLD)
            begin = _logged_one(c, h, "hold_begin", 5)
            assert begin is not None, f"h never held a transaction\n{h.tail()}"
            began = float(begin["t"])
            moved = _logged_one(c, h, "hold_moved", 7)
            released = _logged_one(c, h, "hold_release", 2 * LOCK_TIMEOUT + 2)
            release = (released or {}).get("info") or {"hung": True}
            # (ii) a crash mid-hold: the leader must reap and plan around it.
            victim = followers[2]
            killed = c.kill(victim)
            c.fault("sigkill mid-hold", killed, [victim])
            survivors = [h, *followers[:2]]
            healed = True
            try:
                c.wait_balanced(survivors, CRASH + 2, "after the SIGKILL mid-hold")
            except AssertionError:
                healed = False
            # (iii) a join mid-hold.
            n = c.spawn("n")
            joined = True
            try:
                c.wait_ready([n], HOLD)
            except AssertionError:
                joined = False
            end = _logged_one(c, h, "hold_end", max(1.0, began + HOLD + 3 - c.now()))
            until = c.now() if end is None else float(end["t"])
        finally:
            beats.stop()
        baseline = beats.worst(watched, began, ["h", "a", "b", "c"])
        during = beats.worst(began, until, ["h", "a", "b"])
        n_first = min(beats.beats.get(("n", i), [math.inf])[0] for i in range(1, 50))
        if math.isfinite(n_first):
            during.update(beats.worst(n_first, until, ["n"]))
        starts = c.logged(n, "start")
        ready = c.logged(n, "ready")
        join_s = float(ready[0]["t"]) - float(starts[0]["t"]) if ready and starts else math.inf
        plans = c.query(
            f"SELECT count(*) FROM {c.table('sync_rebalance')} WHERE site = %s "
            "AND at BETWEEN to_timestamp(%s) AND to_timestamp(%s)",
            (c.site, began, until),
        )[0][0]
        token = int(begin["info"]["token"])
        a_got = [
            r.start for r in c.history().runs_of(followers[0].instance)
            if r.token == token and r.start >= began
        ]  # fmt: skip
        numbers: dict[str, Any] = {
            "held_token_left_h": None if moved is None else moved["info"]["moved"],
            "held_token_to_a_after_s": round(min(a_got) - began, 3) if a_got else None,
            "release_inside": release,
            "held_s": None if end is None else (end["info"] or {}).get("held_s"),
            "heartbeat_worst_gap_before_s": baseline,
            "heartbeat_worst_gap_during_hold_s": during,
            "plans_during_hold": plans,
            "join_start_to_ready_s": round(join_s, 3),
            "join_spawn_to_ready_s": round(float(ready[0]["t"]) - n.started_at, 3)
            if ready
            else None,
        }
        if healed and joined and end is not None:
            c.wait_balanced([*survivors, n], CRASH + 2, "after the hold")
            c.finish()
        hist = c.history()
        heal = hist.heal(killed, excluding=[victim.instance])
        report(
            "2 user transaction held open",
            **numbers,
            heal_after_sigkill_s=round(heal, 3),
            **hist.summary(),
        )
        # (iv) The release inside the transaction never hangs: it waits at most the lock
        # timeout for the row its own transaction holds, then raises LockTimeout (or
        # answers at once).
        assert "hung" not in release, f"job.release hung inside the transaction\n{h.tail()}"
        assert release["seconds"] <= LOCK_TIMEOUT + 0.5, release
        assert release.get("raised") in (None, "LockTimeout"), release
        # The hold really lasted (the test held what it says it held).
        assert end is not None and float(end["info"]["held_s"]) >= HOLD - 0.05
        # The held task's token went to a (which then tried to claim the locked task).
        assert a_got and min(a_got) - began <= 5, "the held token never reached a"
        # (i) Every live worker's heartbeats kept flowing, the holder's own and a's included.
        assert max(during.values()) <= BEAT_BOUND, during
        assert {"h", "a", "b", "n"} <= set(during)
        # (ii) The crash healed by the lease rules: the leader reaped and planned.
        assert healed, "the site did not heal after the SIGKILL during the hold"
        assert heal <= CRASH, heal
        # (iii) The new worker's entry completed within a graceful join's bound.
        assert joined and join_s <= GRACEFUL, join_s
        # Guarantees 1 and 3: one claimer at a time, every task done exactly once.
        check_safety(hist)
        assert hist.stranded == 0


# -- 3 ------------------------------------------------------------------------------------------
DRAIN = Timing(drain_timeout=3.0)
TERM_BOUND = DRAIN.drain_timeout + 2.0
"""A SIGTERMed process ends within drain_timeout + 2 s whatever the database does
(the watchdog's grace is 1 s; the other second is a loaded CI machine's)."""


def _exit_within(c: Cluster, proc: Proc, timeout: float) -> float | None:
    """When ``proc`` ended by itself (database clock), or None if not within ``timeout``."""
    with contextlib.suppress(AssertionError):
        c.wait_exits([proc], timeout)
    return proc.exited_at


def test_sigterm_during_a_black_hole_ends_the_process(
    fault_server: OwnedPgServer, tmp_path: Path
) -> None:
    """Every byte of worker ``w`` (jobsync's connection and its own) is black-holed, then
    it gets SIGTERM: it cannot drain, and must end anyway within the bound; its tokens
    move by the lease rules; never two claimers; every task done once."""
    with cluster(
        workdir=tmp_path, dsn=fault_server.dsn, tasks=5_000, tokens=TOKENS, timing=DRAIN,
        work_ms=10,
    ) as c:  # fmt: skip
        proxy = c.proxy()
        others = start(c, ["a", "b"])
        w = c.spawn("w", proxy=proxy)
        c.wait_ready([w])
        c.wait_balanced([*others, w], 10)
        wait_for(lambda: c.done_count() > 200, 30, "tasks flowing")
        cut = c.now()
        proxy.partition("blackhole")
        c.fault("w black-holed", cut, [w])
        # SIGTERM once w is surely stuck on the black hole (its next statement), well
        # inside its lease: the drain cannot reach the database.
        wait_for(lambda: c.now() >= cut + FAST.heartbeat, 2, "a heartbeat interval")
        term = c.signal(w, signal.SIGTERM)
        c.fault("sigterm during the black hole", term, [w])
        ended = _exit_within(c, w, TERM_BOUND + 5)
        c.wait_balanced(others, CRASH + 2, "a and b to take w's tokens")
        proxy.heal()  # lets the server see w's connections end (its open transaction)
        assert c.tasks - c.done_count() > 0, "the tasks must still be flowing"
        if ended is not None:
            c.finish()
        h = c.history()
        heal = h.heal(cut, excluding=[w.instance])
        w_stopped = max((r.end for r in h.runs_of(w.instance)), default=cut)
        report(
            "3a sigterm during a black hole",
            exit_after_sigterm_s=None if ended is None else round(ended - term, 3),
            returncode=w.popen.returncode,
            w_stopped_answering_after_sigterm_s=round(w_stopped - term, 3),
            heal_after_cut_s=round(heal, 3),
            healed_before_exit_s=None if ended is None else round(ended - (cut + heal), 3),
            exit_logged=exit_info(c, w),
            **h.summary(),
        )
        assert ended is not None, f"w still running {TERM_BOUND + 5:g} s after SIGTERM\n{w.tail()}"
        assert ended - term <= TERM_BOUND
        assert w.popen.returncode == -signal.SIGTERM  # SIGTERM's own action ended it
        # SIGTERM stops claiming at once.
        assert w_stopped <= term + SAMPLE_SLACK
        # Its tokens moved by the lease rules: within the crash bound of the cut.
        assert heal <= CRASH
        check_safety(h)
        assert h.stranded == 0


def test_sigterm_after_the_node_was_superseded_ends_the_process(
    fault_server: OwnedPgServer, tmp_path: Path
) -> None:
    """``x``'s name is taken over by a second process; ``x`` learns it was superseded but
    its loop never looks (``ignore_conflict``: a while-True loop that catches and goes
    on), so it keeps running with no coordination left; SIGTERM must still end it."""
    with cluster(
        workdir=tmp_path, dsn=fault_server.dsn, tasks=300, tokens=TOKENS, timing=DRAIN
    ) as c:
        procs = [*start(c, ["a"]), *start(c, ["x"], ignore_conflict=True)]
        x = procs[1]
        c.wait_balanced(procs, 10)
        c.finish()
        second = c.spawn("x")
        taken = second.started_at
        c.fault("same name", taken, [x])
        conflict = _logged_one(c, x, "conflict", CRASH + 2)
        assert conflict is not None, f"x never learnt it was superseded\n{x.tail()}"
        c.wait_ready([second])
        c.sync([x])  # x is still running, sampling, after the conflict
        assert x.alive()
        term = c.signal(x, signal.SIGTERM)
        c.fault("sigterm after supersession", term, [x])
        ended = _exit_within(c, x, TERM_BOUND + 5)
        c.wait_balanced([procs[0], second], CRASH, "after the takeover")
        h = c.history()
        report(
            "3b sigterm after supersession",
            conflict_after_takeover_s=round(float(conflict["t"]) - taken, 3),
            exit_after_sigterm_s=None if ended is None else round(ended - term, 3),
            returncode=x.popen.returncode,
            exit_logged=exit_info(c, x),
            overlaps=len(h.overlaps()),
        )
        assert ended is not None, f"x still running {TERM_BOUND + 5:g} s after SIGTERM\n{x.tail()}"
        assert ended - term <= TERM_BOUND
        assert x.popen.returncode == -signal.SIGTERM
        check_safety(h)


RECONCILE = Timing(drain_timeout=3.0, reconcile=2.0)
"""A 2 s reconciliation interval: a claim row a reap skipped because a transaction held
it is reaped again at most one interval later (``Node._reap``'s promise)."""


def test_sigterm_inside_a_held_transaction_strands_nothing(
    fault_server: OwnedPgServer, tmp_path: Path
) -> None:
    """``h`` completes a task in its own transaction and is SIGTERMed while holding it
    open.  It has no open claim (the completion is its transaction's), so it drains at
    once: its deregistration and the leader's reap of its death both skip the claim row
    its transaction still holds (h's own shutdown then takes 1 s more, so this does
    not depend on a race; without it the race is lost about half the time).  The
    process then ends, the server rolls the
    transaction back, and the claim (a dead incarnation's, status claimed) must be
    reaped and the task done by another worker within a few reconciliation intervals,
    on a site where nothing else changes."""
    with cluster(
        workdir=tmp_path, dsn=fault_server.dsn, tasks=3_000, tokens=TOKENS, work_ms=20,
        timing=RECONCILE,
    ) as c:  # fmt: skip
        a = start(c, ["a"])[0]
        # After the Job is done, h's own shutdown takes 1 s (its transaction still open):
        # the leader's reap of h's death surely runs while the claim row is locked.
        h = c.spawn("h", holder=True, final_delay_s=1.0)
        c.wait_ready([h])
        b = start(c, ["b"])[0]
        c.wait_balanced([a, h, b], 10)
        wait_for(lambda: c.done_count() > 200, 30, "tasks flowing")
        c.hold_transaction(30)
        begin = _logged_one(c, h, "hold_begin", 5)
        assert begin is not None, h.tail()
        task = int(begin["info"]["task"])
        term = c.signal(h, signal.SIGTERM)
        ended = _exit_within(c, h, TERM_BOUND + 5)
        assert ended is not None and ended - term <= TERM_BOUND + 1.0  # + h's own second
        bound = 2 * RECONCILE.reconcile + FAST.timeout + TOLERANCE
        claim_sql = (
            f"SELECT node, incarnation, status FROM {c.table('sync_audit')} "
            "WHERE site = %s AND task_key = %s"
        )

        def h_holds() -> bool:
            rows = c.query(claim_sql, (c.site, str(task)))
            return bool(rows) and rows[0][0] == "h" and rows[0][2] == "claimed"

        try:
            # The library's part: the dead incarnation's claim is released (or the task
            # done by its new owner).  Redoing it is the loop's (its next pass).
            wait_for(lambda: not h_holds(), bound, f"h's claim on task {task} to be reaped")
            reaped: float | None = c.now() - ended
        except AssertionError:
            reaped = None
        claim = c.query(claim_sql, (c.site, str(task)))
        report(
            "4 sigterm inside a held transaction",
            exit_after_sigterm_s=round(ended - term, 3),
            held_task=task,
            claim_released_after_exit_s=None if reaped is None else round(reaped, 3),
            claim_row_at_the_end=claim,
            node_row_of_h=row_summary(c.node_row("h")),
        )
        assert reaped is not None, f"task {task} stranded {bound:g} s after h ended: {claim}"
        c.finish()
        hist = c.history()
        check_safety(hist)
        assert hist.stranded == 0
