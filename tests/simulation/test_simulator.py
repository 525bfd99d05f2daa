"""The simulator itself: replayable, its checker catches what it claims to, and users
can run their own worker logic in it."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from jobsync.runtime.config import CoordinationConfig
from jobsync.sim import InvariantViolation, SimJob, SimNode, VirtualCluster, run_seed

CFG = CoordinationConfig(total_tokens=64, heartbeat_interval_sec=1.0, heartbeat_timeout_sec=3.5)


def _cli(*args: str, hash_seed: str = "0") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COV_CORE", "COVERAGE"))}
    env["PYTHONHASHSEED"] = hash_seed
    return subprocess.run(
        [sys.executable, "-m", "jobsync.sim", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _fingerprint(out: str) -> str:
    return next(line for line in out.splitlines() if line.startswith("fingerprint:"))


def test_a_seed_replays_exactly_whatever_the_string_hash_seed() -> None:
    first, second = _cli("--seed", "11", hash_seed="1"), _cli("--seed", "11", hash_seed="2")
    assert first.returncode == second.returncode == 0, first.stdout + first.stderr
    assert _fingerprint(first.stdout) == _fingerprint(second.stdout)
    assert "ok: every invariant held" in first.stdout


def test_a_violation_exits_non_zero_with_the_history_before_it() -> None:
    out = _cli("--seed", "0", "--switch-off", "revoke_before_assign", "--history", "15")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "VIOLATION invariant 2" in out.stdout
    history = out.stdout.split("event history before it:")[1].strip().splitlines()
    assert 1 <= len(history) <= 15
    assert out.stdout.startswith("replay: python -m jobsync.sim --seed 0 --profile ci")


def test_bad_usage_exits_two() -> None:
    assert _cli().returncode == 2
    assert _cli("--seeds", "x:y").returncode == 2


def test_soak_reports_rate_mix_and_seeds() -> None:
    out = _cli("--soak", "3", "--seed", "100", "--profile", "ci", "--workers", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "scenarios/s" in out.stdout and "fault and workload mix:" in out.stdout


def test_in_process_runs_are_deterministic() -> None:
    logging.getLogger("jobsync").setLevel(logging.CRITICAL)
    assert run_seed(3).fingerprint == run_seed(3).fingerprint != run_seed(4).fingerprint


# -- the checker ------------------------------------------------------------------


def _pair() -> VirtualCluster:
    c = VirtualCluster(CFG, seed=2)
    c.add("a")
    c.add("b")
    assert c.run_until(c.ready, 10)
    return c


def test_invariant_1_catches_a_token_published_by_two_nodes() -> None:
    c = _pair()
    a, b = c.nodes["a"].node, c.nodes["b"].node
    b.snapshot = a.snapshot  # b now answers True for a's tokens
    assert c.checker is not None
    with pytest.raises(InvariantViolation) as caught:
        c.checker.sync("b")
    assert caught.value.invariant == 1


def test_a_lapsed_lease_is_not_a_double_claim() -> None:
    c = _pair()
    c.pause("a", 20)  # a's lease lapses; b takes a's tokens while a is paused
    assert c.run_until(lambda: len(c.claimable().get("b", ())) == 64, 10)
    c.run_for(15)


def test_the_full_and_incremental_checks_agree_after_every_event() -> None:
    c = _pair()
    c.add("c")
    for _ in range(2000):
        c.step()
        c.check_exclusive()


# -- your own worker logic in the simulator ----------------------------------------

ORDERS = [f"order-{i}" for i in range(200)]


class OrderWorker:
    """What a user's loop looks like in the simulator: SimJob in place of Job."""

    def __init__(self, cluster: VirtualCluster, sim: SimNode, shipped: dict[str, str]) -> None:
        self.c, self.job, self.shipped = cluster, SimJob(cluster, sim), shipped

    def step(self) -> float:
        for order in ORDERS:
            if order in self.shipped or not self.job.can_claim_task(order):
                continue
            if self.job.add_task(order) and self.job.complete([order]) == {order}:
                assert order not in self.shipped, f"{order} shipped twice"
                self.shipped[order] = self.job.name  # "in the same transaction"
        return self.c.now + 0.25

    def finish(self, *, release: bool) -> None:
        self.job.halted = True


def test_user_code_runs_against_a_chaotic_cluster() -> None:
    logging.getLogger("jobsync").setLevel(logging.CRITICAL)
    shipped: dict[str, str] = {}
    c = VirtualCluster(CFG, seed=9, user=lambda cl, sim: OrderWorker(cl, sim, shipped))
    for name in ("w1", "w2", "w3", "w4"):
        c.add(name)
    c.at(c.now + 0.5, lambda: c.pause("w2", 8))  # past its lease
    c.at(c.now + 0.7, lambda: c.cut_off("w3"))
    c.at(c.now + 4.0, lambda: c.restore("w3"))
    c.at(c.now + 1.0, lambda: c.crash("w4"))
    c.run_for(30)
    assert len(shipped) == len(ORDERS)
    assert {"w1", "w2", "w3"} & set(shipped.values())
