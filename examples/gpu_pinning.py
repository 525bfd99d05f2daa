"""Pinning: tasks that need a GPU go to ``gpu-*`` nodes, and to ``cpu-*`` ones if none is up.

    python examples/gpu_pinning.py --dsn sqlite:///pinning.db

A ``lock_provider`` returns ``(task_id, patterns, reason)`` items when the
Job enters; each pins the *token* its task hashes to (so every task of that
token goes along) to the nodes whose names match the patterns, SQL ``LIKE``
style.  The first pattern that matches a live node decides: with
``['gpu-%', 'cpu-%']`` a GPU node gets the token while one is up, and a CPU
node otherwise.  With ``['gpu-%']`` alone the token would be left unowned
while no GPU node is up, and reported (``jobsync status``, metrics, history).

To keep it to one command this script runs two nodes, ``gpu-01`` and
``cpu-01``, in one process; in production each is its own process started
with its own ``--node-name``, and each passes the same lock_provider.  It
shows who may claim the render tasks, then stops ``gpu-01`` and shows them
move to ``cpu-01``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable

import jobsync
from jobsync import Job, Task

RENDER_TASKS = [f"render-{i}" for i in range(10)]
PATTERNS = ["gpu-%", "cpu-%"]


def gpu_locks(job: Job) -> Iterable[tuple[str, list[str], str]]:
    """The lock_provider: called once as the Job enters."""
    return [(task_id, PATTERNS, "needs a GPU; CPU if none is up") for task_id in RENDER_TASKS]


def who_claims(jobs: list[Job]) -> dict[str, list[str]]:
    """For each render task, the nodes that may claim it now."""
    return {t: [j.name for j in jobs if j.can_claim_task(Task(t))] for t in RENDER_TASKS}


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--site", default="render")
    parser.add_argument("--dsn", help="sqlite:///path or postgresql://... (default: SYNC_SQL_*)")
    args = parser.parse_args()
    config = args.dsn or jobsync.config

    def node(name: str) -> Job:
        return Job(name, args.site, config, lock_provider=gpu_locks, clear_existing_locks=True)

    with node("cpu-01") as cpu:
        with node("gpu-01") as gpu:
            both = [cpu, gpu]
            # Ready means each holds what the latest plan gives it; the pins are in that plan.
            wait_until(lambda: all(who_claims(both)[t] == ["gpu-01"] for t in RENDER_TASKS))
            owners = who_claims(both)
            on_gpu = sum(owners[t] == ["gpu-01"] for t in RENDER_TASKS)
            print(f"render tasks claimable by gpu-01 only: {on_gpu} of {len(RENDER_TASKS)}")
            for task_id in RENDER_TASKS[:3]:
                task = Task(task_id)
                if gpu.can_claim_task(task) and gpu.add_task(task):
                    print(f"gpu-01 renders {task_id}")
            gpu.write_audit()
        print("gpu-01 left; the pins fall back to the next pattern, cpu-%")
        wait_until(lambda: all(cpu.can_claim_task(Task(t)) for t in RENDER_TASKS))
        on_cpu = sum(cpu.can_claim_task(Task(t)) for t in RENDER_TASKS)
        print(f"render tasks claimable by cpu-01: {on_cpu} of {len(RENDER_TASKS)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
