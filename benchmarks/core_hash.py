"""token_for per call, per hash: ``python -m benchmarks.core_hash [--quick]``.

Measures the public ``token_for`` (which validates its arguments) and the
flat closure from ``token_function`` (what ``can_claim_task`` uses), for
every hash, against a plain ``double_sha256`` computation of the same ids in
the same run, so the ratio survives a noisy machine.
"""

from __future__ import annotations

import argparse
import hashlib

from benchmarks._common import per_call_ns
from jobsync.core import HASH_FUNCTIONS, token_for, token_function


def run(quick: bool = False) -> list[dict[str, object]]:
    ids: list[object] = [f"task-{i}" for i in range(20_000 if quick else 200_000)]
    repeat = 3 if quick else 7

    def plain(task_id: object) -> int:
        inner = hashlib.sha256(str(task_id).encode()).digest()
        return int.from_bytes(hashlib.sha256(inner).digest()[:8], "big") % 10_000

    baseline = per_call_ns(plain, ids, repeat)
    rows: list[dict[str, object]] = [
        {"what": "plain double_sha256 (baseline)", "ns": baseline, "ratio": 1.0}
    ]
    for name in sorted(HASH_FUNCTIONS):
        public = per_call_ns(lambda t, n=name: token_for(t, 10_000, n), ids, repeat)  # type: ignore[misc]
        flat = per_call_ns(token_function(10_000, name), ids, repeat)
        rows.append({"what": f"token_for(..., {name!r})", "ns": public, "ratio": public / baseline})
        rows.append({"what": f"token_function({name!r})", "ns": flat, "ratio": flat / baseline})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    print(f"{'what':<36} {'ns/call':>9} {'vs baseline':>12}")
    for row in run(args.quick):
        print(f"{row['what']:<36} {row['ns']:>9.0f} {row['ratio']:>11.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
