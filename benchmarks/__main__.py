"""Every benchmark, one after the other.

    python -m benchmarks [--quick] [--only NAME,...] [--dsn DSN] [--timeout SECONDS]

Runs each benchmark module of this directory that exists, in this order:
core_hash, core_plan, rebalance, runtime, plan_commit, load, scale,
failover, balance (then any other module here with a ``__main__`` guard), each in a
process of its own (``python -m benchmarks.NAME``), its table printed as it
comes.  With ``--quick``, each module's quick variant: ``--quick``, or for a
module without that flag the arguments listed in ``QUICK_ARGS``.  Without
it, each module's defaults (several minutes in all).  ``--dsn`` is passed to
plan_commit and load (their default: ``JOBSYNC_TEST_DSN``,
else 127.0.0.1:5432).  Exits non-zero if any module failed (or ran
longer than ``--timeout`` seconds), after running the others.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = (
    "core_hash",
    "core_plan",
    "rebalance",
    "runtime",
    "plan_commit",
    "load",
    "scale",
    "failover",
    "balance",
)
NOT_BENCHMARKS = {"__init__", "__main__", "_common", "alternatives"}
QUICK_ARGS: dict[str, list[str]] = {
    # failover.py has no --quick: one repetition at the fast timings on both backends.
    "failover": ["--timing", "fast", "--repeat", "1"],
}
TAKES_DSN = {"plan_commit", "load"}
"""failover.py takes a DSN too, but by default builds a throwaway cluster with the
settings its harness wants: it is left to that."""


def modules(directory: Path = HERE) -> list[str]:
    """The benchmark modules present: ORDER first, then any other runnable one."""
    present = {p.stem for p in directory.glob("*.py")} - NOT_BENCHMARKS
    extra = sorted(
        name
        for name in present - set(ORDER)
        if '__name__ == "__main__"' in (directory / f"{name}.py").read_text(errors="replace")
    )
    return [name for name in ORDER if name in present] + extra


def _accepts(name: str, flag: str, directory: Path) -> bool:
    """Whether the module's source mentions ``flag`` as an option (no import needed)."""
    return f'"{flag}"' in (directory / f"{name}.py").read_text(errors="replace")


def arguments(name: str, quick: bool, dsn: str | None, directory: Path = HERE) -> list[str]:
    args: list[str] = []
    if quick:
        if _accepts(name, "--quick", directory):
            args.append("--quick")
        else:
            args += QUICK_ARGS.get(name, [])
    if dsn is not None and name in TAKES_DSN and _accepts(name, "--dsn", directory):
        args += ["--dsn", dsn]
    return args


def run_one(command: list[str], timeout: float | None) -> int:
    """Run ``command`` in its own process group, output straight through; its exit code."""
    proc = subprocess.Popen(command, start_new_session=True, cwd=HERE.parent)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return -signal.SIGKILL
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="each module's quick variant")
    parser.add_argument("--only", help="comma-separated module names (default: all present)")
    parser.add_argument("--dsn", help="PostgreSQL DSN for the modules that take one")
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds per module before it is killed"
    )
    args = parser.parse_args(argv)
    names = modules()
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            parser.error(f"no such benchmark module: {', '.join(unknown)} (have {names})")
        names = [n for n in names if n in wanted]
    results: list[tuple[str, int, float]] = []
    for name in names:
        command = [
            sys.executable,
            "-m",
            f"benchmarks.{name}",
            *arguments(name, args.quick, args.dsn),
        ]
        print(f"\n=== {' '.join(['python', *command[1:]])}", flush=True)
        started = time.monotonic()
        code = run_one(command, args.timeout)
        results.append((name, code, time.monotonic() - started))
    print("\n=== summary")
    for name, code, seconds in results:
        verdict = "ok" if code == 0 else f"FAILED (exit {code})"
        print(f"{name:<16} {seconds:7.1f} s  {verdict}")
    return 0 if all(code == 0 for _, code, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
