"""``jobsync`` / ``python -m jobsync``: the operator's view of a cluster, and the demo.

Exit codes: 0 done; 1 the command ran but found problems (``status
--check``) or was refused (not confirmed, live nodes during ``site
reset``); 2 it could not run (bad arguments, bad DSN, unreachable database,
unknown site, schema missing).  Errors are one line on stderr, never a
traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from jobsync.backends.url import redact
from jobsync.cli import cockpit, commands, drain
from jobsync.cli.connect import one_line
from jobsync.cli.parsers import Shared, Subparsers
from jobsync.core.errors import JobSyncError
from jobsync.core.hashing import HASH_FUNCTIONS

PROG = "jobsync"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return int(args.handler(args))
    except commands.CommandRefused as exc:
        _error(str(exc))
        return 1
    except JobSyncError as exc:
        _error(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except BrokenPipeError:  # `jobsync tokens | head`
        return 0


def _error(message: str) -> None:
    print(f"{PROG}: {one_line(redact(message))}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    from jobsync import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Inspect and operate a jobsync cluster; `jobsync demo` shows one at work.",
        epilog="The connection comes from --dsn or the SYNC_SQL_URL / SYNC_SQL_* "
        "environment variables, as for workers.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    shared = Shared.build()
    conn, out = shared.conn, shared.out

    p = sub.add_parser("sites", parents=[conn, out], help="every site in the database")
    p.set_defaults(handler=commands.sites)
    p = sub.add_parser("status", parents=shared.site_json, help="the site at a glance")
    _how_many(p, "--history", 5, "recent rebalances to show")
    p.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if there is a problem (no leader, unowned tokens, ...)",
    )
    p.set_defaults(handler=commands.status)

    p = sub.add_parser("nodes", parents=shared.site_json, help="node rows and their leases")
    p.set_defaults(handler=commands.nodes)

    p = sub.add_parser("tokens", parents=shared.site_json, help="who owns which token")
    p.add_argument("--node", help="only this node's tokens")
    p.set_defaults(handler=commands.tokens)

    p = sub.add_parser("which", parents=shared.site_json, help="a task's token and owner")
    p.add_argument("task_id", metavar="TASK_ID", help="the task id, as the workers pass it")
    p.set_defaults(handler=commands.which)

    p = sub.add_parser("history", parents=shared.site_json, help="the rebalance log")
    _how_many(p, "--limit", 20, "the most recent rebalances to show")
    p.set_defaults(handler=commands.history)

    _locks(sub, shared)
    _maintenance(sub, shared)
    drain.add_commands(sub, shared)
    cockpit.add_commands(sub, shared)
    _demo(sub)
    return parser


def _locks(sub: Subparsers, shared: Shared) -> None:
    locks = sub.add_parser("locks", help="list, add or clear task locks (pins)")
    actions = locks.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser("list", parents=shared.site_json, help="every unexpired lock")
    p.set_defaults(handler=commands.locks_list)
    p = actions.add_parser("add", parents=shared.site_json, help="pin a task's token")
    p.add_argument("task_id", metavar="TASK_ID", help="the task whose token to pin")
    p.add_argument(
        "patterns",
        metavar="PATTERN",
        nargs="+",
        help="LIKE patterns of node names, in order of preference",
    )
    p.add_argument("--reason", help="why the task is pinned, shown by `locks list`")
    p.add_argument(
        "--creator",
        default=commands.DEFAULT_CREATOR,
        help=f"who owns the lock (default {commands.DEFAULT_CREATOR})",
    )
    p.add_argument(
        "--expires-in",
        type=commands.parse_duration,
        metavar="DURATION",
        help="for example 7d or 12h (default: never)",
    )
    p.set_defaults(handler=commands.locks_add)
    p = actions.add_parser("clear", parents=shared.site_json, help="delete locks")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--creator", help="delete this creator's locks")
    which.add_argument("--all", action="store_true", help="delete every lock of the site")
    _yes(p)
    p.set_defaults(handler=commands.locks_clear)


def _maintenance(sub: Subparsers, shared: Shared) -> None:
    conn = shared.conn
    p = sub.add_parser(
        "migrate",
        parents=[conn],
        help="create or upgrade the schema, or upgrade from the original jobsync",
    )
    p.add_argument(
        "--site",
        help="where the original jobsync's locks and audit go (the site the new workers "
        "use); needed only when its tables are found",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print what it would do and change nothing"
    )
    p.add_argument(
        "--original-timeout",
        type=_positive_float,
        default=15.0,
        metavar="SECONDS",
        help="the original workers' heartbeat_timeout_sec: an original worker counts as "
        "live while its heartbeat is younger (default 15)",
    )
    p.add_argument(
        "--timezone",
        default="US/Eastern",
        metavar="ZONE",
        help="the zone the original 1.1 layout's zone-less times are in (default "
        "US/Eastern, the original's SYNC_SQL_TIMEZONE default)",
    )
    p.set_defaults(handler=commands.migrate)

    p = sub.add_parser(
        "prune", parents=shared.site_json, help="delete old audit rows and rebalance history"
    )
    p.add_argument(
        "--older-than",
        type=commands.parse_duration,
        required=True,
        metavar="DURATION",
        help="for example 30d, 12h, 45m or 90s",
    )
    _yes(p)
    p.set_defaults(handler=commands.prune)

    site_cmd = sub.add_parser("site", help="show or reset a site's constants")
    actions = site_cmd.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser("show", parents=shared.site_json, help="the site's stored constants")
    p.set_defaults(handler=commands.site_show)
    p = actions.add_parser(
        "reset",
        parents=shared.site_json,
        help="change total tokens and hash (no node may be live)",
    )
    p.add_argument(
        "--tokens", type=_positive_int, required=True, metavar="N", help="the new total tokens"
    )
    p.add_argument(
        "--hash",
        required=True,
        choices=sorted(HASH_FUNCTIONS),
        metavar="NAME",
        help=f"one of {', '.join(sorted(HASH_FUNCTIONS))}",
    )
    _yes(p)
    p.set_defaults(handler=commands.site_reset)


def _demo(sub: Subparsers) -> None:
    from jobsync.cli import demo

    p = sub.add_parser("demo", help="run workers on SQLite: kill one, add one, check the work")
    demo.add_arguments(p)
    p.set_defaults(handler=demo.run)


def _how_many(p: argparse.ArgumentParser, flag: str, default: int, what: str) -> None:
    """A ``flag N`` option taking a positive integer: how many of ``what``."""
    p.add_argument(
        flag, type=_positive_int, default=default, metavar="N", help=f"{what} (default {default})"
    )


def _yes(p: argparse.ArgumentParser) -> None:
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")


MAX_INT = 2**63 - 1
"""The largest number an option takes: a 64-bit integer, as both databases store it."""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if not 1 <= value <= MAX_INT:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer up to {MAX_INT}, got {text!r}"
        )
    return value
