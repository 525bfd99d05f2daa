# Law: the command line replays any run exactly.  ``--seed`` (with the same
# profile and overrides, which a failure prints) reproduces a scenario event
# for event; the exit status is 0 when every invariant held, 1 on a
# violation, 2 on bad usage.
"""python -m jobsync.sim: replay one seeded scenario, run a batch, or soak.

python -m jobsync.sim --seed 42 [--profile ci] [--nodes K] [--tokens T]
                      [--steps S] [--duration SECONDS] [--switch-off NAME]
python -m jobsync.sim --seeds 0:2000 [--profile ci] [--workers W]
python -m jobsync.sim --soak 60 [--seed START] [--profile soak] [--workers W]
"""

from __future__ import annotations

import argparse
import logging
import random
import sys

import attrs

from jobsync.core.defences import Defences
from jobsync.sim.scenario import GENERATOR, PROFILES, make_spec, run_scenario
from jobsync.sim.soak import run_many

DEFENCES = tuple(attrs.fields_dict(Defences))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobsync.sim", description=__doc__.split("\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--soak", type=float, metavar="SECONDS", help="run seeds for a time budget")
    mode.add_argument("--seeds", metavar="A:B", help="run seeds A..B-1 and summarise")
    p.add_argument("--seed", type=int, help="the scenario to replay (with --soak: first seed)")
    p.add_argument("--profile", choices=PROFILES, help="size and fault mix (default ci; soak)")
    p.add_argument("--nodes", type=int, help="override the number of nodes")
    p.add_argument("--tokens", type=int, help="override total_tokens")
    p.add_argument("--steps", type=int, help="override the number of workload/fault steps")
    p.add_argument("--duration", type=float, help="override the chaos phase, virtual seconds")
    p.add_argument("--workers", type=int, help="processes for --seeds/--soak (default: CPUs)")
    p.add_argument("--history", type=int, default=60, help="event lines printed on a violation")
    p.add_argument(
        "--switch-off", action="append", default=[], choices=sorted(DEFENCES),
        help="turn a safety defence off (to watch the checker catch it)",
    )  # fmt: skip
    p.add_argument(
        "--capacities", action="store_true",
        help="give each node a capacity (0.5, 1, 2 or 4, drawn per name) for --seed",
    )  # fmt: skip
    p.add_argument(
        "--loads", action="store_true",
        help="skewed task costs per token, and the leader balances measured load, for --seed",
    )  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.getLogger("jobsync").setLevel(logging.CRITICAL)
    if args.soak is not None:
        return _soak(args)
    if args.seeds is not None:
        return _batch(args)
    if args.seed is None:
        print("give --seed N, --seeds A:B or --soak SECONDS", file=sys.stderr)
        return 2
    return _one(args)


def _one(args: argparse.Namespace) -> int:
    spec = make_spec(
        args.seed,
        args.profile or "ci",
        nodes=args.nodes,
        tokens=args.tokens,
        steps=args.steps,
        duration=args.duration,
        defences_off=tuple(args.switch_off),
        capacities=args.capacities,
        loads=args.loads,
    )
    result = run_scenario(spec)
    print(f"replay: {spec.command()}  (generator {GENERATOR})")
    print(
        f"{spec.nodes} nodes, {spec.tokens} tokens, heartbeat {spec.interval:g}s / timeout "
        f"{spec.timeout:g}s; {result.events} events over {result.virtual:.1f} virtual s in "
        f"{result.wall:.2f}s; {result.plans_checked} plans checked"
    )
    print("mix: " + ", ".join(f"{k} {v}" for k, v in sorted(result.mix.items())))
    for kind, elapsed, bound in result.measured:
        print(f"measured {kind}: converged in {elapsed:.3f}s (bound {bound:g}s)")
    print(f"fingerprint: {result.fingerprint}")
    if result.violation is None:
        print("ok: every invariant held")
        return 0
    print(f"\nVIOLATION {result.violation}\n\nevent history before it:")
    print("\n".join(result.history[-args.history :]))
    return 1


def _batch(args: argparse.Namespace) -> int:
    first, _, last = args.seeds.partition(":")
    try:
        seeds = range(int(first), int(last))
    except ValueError:
        print(f"--seeds wants A:B, got {args.seeds!r}", file=sys.stderr)
        return 2
    summary = run_many(
        seeds, args.profile or "ci", workers=args.workers, defences_off=tuple(args.switch_off)
    )
    print(summary.report())
    return 1 if summary.failures else 0


def _soak(args: argparse.Namespace) -> int:
    start = args.seed if args.seed is not None else random.SystemRandom().randrange(10**9)
    print(f"soak for {args.soak:g}s from seed {start}")
    summary = run_many(
        range(start, start + 10**9),
        args.profile or "soak",
        workers=args.workers,
        budget=args.soak,
        defences_off=tuple(args.switch_off),
    )
    print(summary.report())
    for outcome in summary.failures[:1]:
        print("\nevent history before the first violation:\n" + "\n".join(outcome.history))
    return 1 if summary.failures else 0


if __name__ == "__main__":
    sys.exit(main())
