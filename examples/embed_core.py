"""Embedding jobsync's core in another scheduler: hashing and planning, nothing else.

    python examples/embed_core.py

``jobsync.core`` is pure: no database, no threads, no clock.  A scheduler
that keeps its own membership (here a toy one, a list of worker names) can
still route each task to a token with ``token_for`` and give tokens to
workers with ``plan``: perfectly balanced, and every change moves the fewest
tokens possible.  ``plan`` takes the current owners, so feeding it its own
last result gives the minimal change.  Pins use ``locks=``.
"""

from __future__ import annotations

from collections import Counter

from jobsync.core import Plan, plan, token_for

TOTAL = 120


class ToyScheduler:
    def __init__(self) -> None:
        self.workers: list[str] = []
        self.current: Plan = plan(TOTAL, [None] * TOTAL, [])

    def set_workers(self, workers: list[str], locks: dict[int, list[str]] | None = None) -> Plan:
        self.workers = workers
        self.current = plan(TOTAL, self.current.assignment, workers, locks)
        return self.current

    def route(self, task_id: object) -> str | None:
        return self.current.assignment[token_for(task_id, TOTAL)]


def show(step: str, result: Plan) -> None:
    loads = ", ".join(f"{n}={c}" for n, c in sorted(result.targets.items()))
    print(f"{step}: moved {result.moved} tokens (fewest possible: {result.lower_bound}); {loads}")


def main() -> int:
    scheduler = ToyScheduler()
    show("start a, b, c", scheduler.set_workers(["a", "b", "c"]))
    show("b leaves", scheduler.set_workers(["a", "c"]))
    show("d joins", scheduler.set_workers(["a", "c", "d"]))
    gpu_token = token_for("train-model", TOTAL)
    show(
        "gpu-1 joins, train-model pinned to gpu-%",
        scheduler.set_workers(["a", "c", "d", "gpu-1"], {gpu_token: ["gpu-%"]}),
    )
    print(f"train-model -> token {gpu_token} -> {scheduler.route('train-model')}")
    routed = Counter(scheduler.route(f"task-{i}") for i in range(1000))
    print("1000 tasks routed: " + ", ".join(f"{w}={n}" for w, n in sorted(routed.items(), key=str)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
