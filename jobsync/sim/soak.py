# Law: many seeds, one summary, nothing lost.  Every scenario that ran is
# counted; every failing seed is reported with the exact command that replays
# it; the fault mix is the sum of what the scenarios actually did (an action
# that found no target is not counted).  Work is spread over processes
# (each scenario is independent and deterministic), and a soak stops
# *starting* scenarios when its time budget is spent.
"""Run many seeded scenarios (a CI batch or a timed soak) and summarise them."""

from __future__ import annotations

import concurrent.futures
import logging
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator

import attrs

from jobsync.sim.scenario import make_spec, run_scenario


@attrs.frozen(kw_only=True)
class Outcome:
    """What a worker process sends back about one scenario (small and picklable)."""

    seed: int
    command: str
    nodes: int
    tokens: int
    violation: str | None
    invariant: int | None
    mix: dict[str, int]
    events: int
    virtual: float
    wall: float
    plans: int
    worst_margin: float
    """The largest measured elapsed / bound ratio of invariant 3 (<= 1 passes)."""
    history: tuple[str, ...] = ()


def run_one(seed: int, profile: str, defences_off: tuple[str, ...] = ()) -> Outcome:
    logging.getLogger("jobsync").setLevel(logging.CRITICAL)
    spec = make_spec(seed, profile, defences_off=defences_off)
    result = run_scenario(spec)
    violation = result.violation
    return Outcome(
        seed=seed,
        command=spec.command(),
        nodes=spec.nodes,
        tokens=spec.tokens,
        violation=None if violation is None else str(violation),
        invariant=None if violation is None else violation.invariant,
        mix=dict(result.mix),
        events=result.events,
        virtual=result.virtual,
        wall=result.wall,
        plans=result.plans_checked,
        worst_margin=max((e / b for _, e, b in result.measured), default=0.0),
        history=tuple(result.history[-40:]) if violation is not None else (),
    )


@attrs.define
class Summary:
    profile: str
    outcomes: list[Outcome] = attrs.Factory(list)
    wall: float = 0.0

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.violation is not None]

    def report(self) -> str:
        done = len(self.outcomes)
        rate = done / self.wall if self.wall else 0.0
        mix: Counter[str] = Counter()
        for o in self.outcomes:
            mix.update(o.mix)
        sizes = Counter(
            "200 nodes x 10000 tokens" if o.tokens >= 10_000 else f"<= {_bucket(o.tokens)} tokens"
            for o in self.outcomes
        )
        lines = [
            f"profile {self.profile}: {done} scenarios in {self.wall:.1f}s "
            f"({rate:.1f} scenarios/s), {len(self.failures)} failing",
            f"events {sum(o.events for o in self.outcomes)}, virtual "
            f"{sum(o.virtual for o in self.outcomes):.0f}s, plans checked "
            f"{sum(o.plans for o in self.outcomes)}, worst invariant-3 margin "
            f"{max((o.worst_margin for o in self.outcomes), default=0.0):.2f} of its bound",
            "sizes: " + ", ".join(f"{k}: {v}" for k, v in sorted(sizes.items())),
            "fault and workload mix: "
            + ", ".join(f"{k} {v}" for k, v in sorted(mix.items(), key=lambda kv: -kv[1])),
        ]
        for o in self.failures:
            lines.append(f"FAIL seed {o.seed}: {o.violation}\n  replay: {o.command}")
        return "\n".join(lines)


def _bucket(tokens: int) -> int:
    for edge in (16, 100, 1000, 4096):
        if tokens <= edge:
            return edge
    return tokens


def run_many(
    seeds: Iterable[int],
    profile: str,
    *,
    workers: int | None = None,
    budget: float | None = None,
    defences_off: tuple[str, ...] = (),
) -> Summary:
    """Run ``seeds`` under ``profile`` on ``workers`` processes (1: in this process);
    with ``budget`` seconds, stop starting new seeds once it is spent."""
    workers = workers or os.cpu_count() or 1
    summary = Summary(profile=profile)
    started = time.perf_counter()
    deadline = None if budget is None else started + budget
    feed = _until(iter(seeds), deadline)
    if workers == 1:
        for seed in feed:
            summary.outcomes.append(run_one(seed, profile, defences_off))
    else:
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as pool:
            running: set[concurrent.futures.Future[Outcome]] = set()
            for seed in feed:
                running.add(pool.submit(run_one, seed, profile, defences_off))
                if len(running) >= 2 * workers:
                    done, running = concurrent.futures.wait(
                        running, return_when=concurrent.futures.FIRST_COMPLETED
                    )
                    summary.outcomes.extend(f.result() for f in done)
            summary.outcomes.extend(f.result() for f in running)
    summary.outcomes.sort(key=lambda o: o.seed)
    summary.wall = time.perf_counter() - started
    return summary


def _until(seeds: Iterator[int], deadline: float | None) -> Iterator[int]:
    for seed in seeds:
        if deadline is not None and time.perf_counter() >= deadline:
            return
        yield seed
