"""Runtime benchmarks: the hot path, memory, round trips and failover times.

    python -m benchmarks.runtime [--quick] [--json PATH]

- ``can_claim_task`` ns/call per hash function, against plain
  ``double_sha256`` hashing of the same ids in the same run (the earlier
  jobsync's per-call cost was about 2.8 us here).
- Library memory of a follower at steady state and the leader's peak
  (tracemalloc), at 10,000 tokens.
- Round trips per minute per worker at the default timings (virtual time,
  memory backend; one heartbeat is one round trip, so 12 a minute at 5 s).
- Failover at the default timings (virtual time): crash to full
  reassignment, graceful leave, join.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable

from benchmarks._common import per_call_ns, requests, scratch_store, write_json
from jobsync import CoordinationConfig, Job, Task
from jobsync.core.lifecycle import NodeState
from jobsync.sim import VirtualCluster

Row = dict[str, object]


def hot_path(quick: bool) -> list[Row]:
    ids: list[object] = [f"task-{i}" for i in range(20_000 if quick else 200_000)]
    repeat = 3 if quick else 7

    def legacy(task_id: object) -> int:
        digest = hashlib.sha256(hashlib.sha256(str(task_id).encode()).digest()).digest()
        return int.from_bytes(digest[:8], "big") % 10_000

    baseline = per_call_ns(legacy, ids, repeat)
    rows: list[Row] = [{"bench": "hash", "what": "double_sha256 (plain)", "ns_per_call": baseline}]
    for name in ("xxh3", "md5", "sha256", "double_sha256"):
        cfg = CoordinationConfig(hash_function=name, total_tokens=10_000)
        with (
            scratch_store("memory") as store,
            Job(
                "solo", "bench", store.open("solo"), coordination_config=cfg, handle_sigterm=False
            ) as job,
        ):
            tasks = [Task(i) for i in ids]
            ns_raw = per_call_ns(job.can_claim_task, ids, repeat)
            ns_task = per_call_ns(job.can_claim_task, tasks, repeat)
        rows.append(
            {
                "bench": "can_claim_task",
                "what": f"{name}, raw id",
                "ns_per_call": ns_raw,
                "vs_plain_double_sha256": ns_raw / baseline,
            }
        )
        rows.append(
            {
                "bench": "can_claim_task",
                "what": f"{name}, Task",
                "ns_per_call": ns_task,
                "vs_plain_double_sha256": ns_task / baseline,
            }
        )
    return rows


LEADER_SCRIPT = """
import sys
from jobsync import CoordinationConfig, Job
from jobsync.backends.sqlite import SQLiteBackend
cfg = CoordinationConfig(total_tokens=int(sys.argv[2]), heartbeat_interval_sec=0.2,
                         heartbeat_timeout_sec=2.0, settle_window_sec=0.2)
with Job("leader", "m", SQLiteBackend(sys.argv[1], client="leader"), coordination_config=cfg,
         handle_sigterm=False):
    print("ready", flush=True)
    sys.stdin.read()
"""


def _wait_for(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)


def memory(quick: bool) -> list[Row]:
    """Library memory of one follower (leader in another process), and a leader's peak."""
    rows: list[Row] = []
    for total in (10_000,) if quick else (10_000, 100_000):
        cfg = CoordinationConfig(
            total_tokens=total,
            heartbeat_interval_sec=0.2,
            heartbeat_timeout_sec=2.0,
            settle_window_sec=0.2,
        )
        with scratch_store("sqlite") as db:
            leader = subprocess.Popen(
                [sys.executable, "-c", LEADER_SCRIPT, db.location, str(total)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert leader.stdout is not None and leader.stdout.readline().strip() == "ready"
            gc.collect()
            tracemalloc.start()
            follower = Job(
                "follower",
                "m",
                db.open("follower"),
                coordination_config=cfg,
                handle_sigterm=False,
            )
            follower.__enter__()
            _wait_for(lambda: len(follower.my_tokens) == total // 2, 20)
            beats = follower.statistics()["heartbeats"]
            _wait_for(lambda: follower.statistics()["heartbeats"] >= beats + 5, 20)
            gc.collect()
            current, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            rows.append(
                {
                    "bench": "memory",
                    "what": f"follower steady, T={total}",
                    "bytes": current,
                    "peak_bytes": peak,
                }
            )
            follower.__exit__(None, None, None)
            assert leader.stdin is not None
            leader.stdin.close()
            leader.wait(30)
        # The leader's peak: one full plan of every token onto two nodes, in this process.
        with scratch_store("memory") as store:
            tracemalloc.start()
            with (
                Job("a", "p", store.open("a"), coordination_config=cfg, handle_sigterm=False),
                Job("b", "p", store.open("b"), coordination_config=cfg, handle_sigterm=False),
            ):
                _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        rows.append(
            {
                "bench": "memory",
                "what": f"leader+follower+store peak, T={total}",
                "peak_bytes": peak,
            }
        )
    return rows


def round_trips() -> list[Row]:
    cfg = CoordinationConfig()  # defaults: heartbeat every 5 s
    c = VirtualCluster(cfg, seed=1)
    for name in ("a", "b", "c"):
        c.add(name)
    c.run_until(c.ready, 60)
    c.run_for(60)
    before = {k: requests(s.handle.statistics()) for k, s in c.nodes.items()}
    c.run_for(600)
    rows: list[Row] = []
    for key, sim in c.nodes.items():
        per_min = (requests(sim.handle.statistics()) - before[key]) / 10
        role = "leader" if sim.node.is_leader else "follower"
        rows.append({"bench": "round_trips", "what": f"steady {role} {key}", "per_minute": per_min})
    return rows


def failover() -> list[Row]:
    cfg = CoordinationConfig()
    rows: list[Row] = []
    for event in ("crash-leader", "crash-follower", "leave", "join"):
        c = VirtualCluster(cfg, seed=7)
        for name in ("a", "b", "c", "d"):
            c.add(name)
        c.run_until(lambda c=c: c.ready(), 60)
        c.run_for(7)
        total = cfg.total_tokens

        def covered(c: VirtualCluster = c, without: str = "") -> bool:
            sets = c.claimable()
            return without not in sets and sum(len(v) for v in sets.values()) == total

        start = c.now
        if event == "crash-leader":
            c.crash("a")
            c.run_until(lambda: covered(without="a"), 60)
        elif event == "crash-follower":
            c.crash("c")
            c.run_until(lambda: covered(without="c"), 60)
        elif event == "leave":
            c.drain("b")
            c.run_until(lambda: c.node("b").state is NodeState.STOPPED and covered(without="b"), 60)
        else:
            c.add("e")
            c.run_until(lambda: "e" in c.claimable() and c.ready(), 60)
        rows.append({"bench": "failover", "what": event, "seconds": round(c.now - start, 3)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    rows = hot_path(args.quick) + memory(args.quick) + round_trips() + failover()
    for row in rows:
        detail = ", ".join(
            f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
            for k, v in row.items()
            if k not in ("bench", "what")
        )
        print(f"{row['bench']:<15} {row['what']:<38} {detail}")
    write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
