"""An operator's session: look at a site and manage its locks without joining it.

    python examples/admin.py --dsn sqlite:///jobsync.db --site production
    python examples/admin.py --dsn sqlite:///jobsync.db --site production \\
        --pin report-2024 'gpu-%' 'cpu-%' --reason "needs a GPU; CPU if none"
    python examples/admin.py --dsn sqlite:///jobsync.db --site production --clear

``Job(..., observer=True)`` writes no node row, never leads, takes no tokens
and is invisible to the monitoring queries; it may read status and manage
locks.  Locks are registered under the observer's name (here ``admin``), so
``--clear`` removes exactly the locks this session made.  The command line
does the same: ``jobsync locks list|add|clear --site ...``.
"""

from __future__ import annotations

import argparse

import jobsync
from jobsync import Job


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--site", default="production")
    parser.add_argument("--dsn", help="sqlite:///path or postgresql://... (default: SYNC_SQL_*)")
    parser.add_argument(
        "--pin",
        nargs="+",
        metavar=("TASK_ID", "PATTERN"),
        help="pin TASK_ID's token to nodes matching the patterns, in order",
    )
    parser.add_argument("--reason")
    parser.add_argument("--clear", action="store_true", help="remove this session's locks")
    args = parser.parse_args()
    if args.pin is not None and len(args.pin) < 2:
        parser.error("--pin needs a TASK_ID and at least one PATTERN")

    with Job("admin", args.site, args.dsn or jobsync.config, observer=True) as admin:
        print(f"live nodes: {', '.join(admin.get_active_nodes()) or '(none)'}")
        print(f"dead nodes: {', '.join(admin.get_dead_nodes()) or '(none)'}")
        if args.pin:
            task_id, *patterns = args.pin
            admin.register_lock(task_id, patterns, reason=args.reason)
            print(f"pinned {task_id!r} (token {admin.task_to_token(task_id)}) to {patterns}")
        if args.clear:
            print(f"cleared {admin.clear_locks_by_creator('admin')} lock(s)")
        locks = admin.list_locks()
        print(f"locks: {len(locks)}")
        for lock in locks:
            conflict = f"  (loses to {lock['conflict_with']!r})" if lock["conflict_with"] else ""
            print(
                f"  {lock['task_id']!r} token {lock['token_id']} -> {lock['node_patterns']} "
                f"by {lock['created_by']}: {lock['reason'] or ''}{conflict}"
            )
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except jobsync.errors.InvalidArgument as exc:  # e.g. a site no worker has created yet
        raise SystemExit(f"admin: {exc}") from None
