"""``jobsync drain`` and ``jobsync undrain``: planned maintenance from the command line.

``drain NODE`` marks the worker's row drained (for ``--for DURATION``, or
until ``undrain``); the leader moves its tokens to the others with the usual
fenced hand-off and keeps it at zero, while the worker stays alive.  A drain
that would leave several workers drained at once, no undrained worker, or
pinned tokens with no eligible worker is refused in one line (exit 1) unless
``--force``.  ``--wait`` returns once the worker holds nothing.  What each
does is ``jobsync.runtime.maintenance``'s; this module only parses, prints
and waits.
"""

from __future__ import annotations

import argparse
import getpass
import time

from jobsync.backends.base import Backend, NodeRecord
from jobsync.cli import render
from jobsync.cli.commands import CommandRefused, emit, parse_duration, require_site, with_backend
from jobsync.cli.parsers import Shared, Subparsers
from jobsync.cli.report import Json
from jobsync.core import rules
from jobsync.runtime.maintenance import DrainRefused, drain_node, undrain_node

WAIT_POLL = 0.1


def add_commands(sub: Subparsers, shared: Shared) -> None:
    """Register ``drain`` and ``undrain`` on the main parser."""
    p = sub.add_parser(
        "drain",
        parents=shared.site_json,
        help="move a running worker's tokens to the others and keep it at zero (maintenance)",
    )
    p.add_argument("node", metavar="NODE", help="the worker's node name")
    p.add_argument(
        "--for",
        dest="duration",
        type=parse_duration,
        metavar="DURATION",
        help="end the drain by itself after this long, such as 30m or 2h (default: until undrain)",
    )
    p.add_argument("--reason", default="", help="why, recorded in the rebalance history")
    p.add_argument(
        "--by", default=None, help="who drains it (default: the user running the command)"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="drain even when other workers are drained, none would be left, or pinned "
        "tokens would have no eligible worker",
    )
    p.add_argument(
        "--wait",
        type=float,
        default=None,
        metavar="SECONDS",
        help="wait up to this long for the worker to hold no token; exit 1 if it still does",
    )
    p.set_defaults(handler=drain)

    p = sub.add_parser(
        "undrain", parents=shared.site_json, help="end a worker's drain: it gets its share back"
    )
    p.add_argument("node", metavar="NODE", help="the worker's node name")
    p.set_defaults(handler=undrain)


@with_backend
def drain(args: argparse.Namespace, backend: Backend, url: str) -> int:
    require_site(backend, args.site, url)
    if args.wait is not None and not 0 <= args.wait < float("inf"):
        raise CommandRefused(f"--wait must be a non-negative number of seconds, got {args.wait}")
    by = args.by if args.by is not None else _user()
    try:
        row = drain_node(
            backend,
            args.site,
            args.node,
            duration=args.duration,
            reason=args.reason,
            by=by,
            force=args.force,
        )
    except DrainRefused as exc:
        raise CommandRefused(str(exc)) from None
    held = _held(backend, args.site, args.node)
    if args.wait is not None:
        deadline = time.monotonic() + args.wait
        while held and time.monotonic() < deadline:
            time.sleep(WAIT_POLL)
            held = _held(backend, args.site, args.node)
    data = _row_json(row, backend.now(), held)

    def text() -> str:
        until = (
            "until undrained"
            if row.drain_until is None
            else f"until {render.stamp(row.drain_until)}"
        )
        note = f" ({row.drain_note})" if row.drain_note else ""
        now = "holds no token" if not held else f"still holds {held} tokens"
        return f"drained {row.name} of site {args.site!r} {until}{note}: it {now}"

    emit(args, data, text)
    return 1 if args.wait is not None and held else 0


@with_backend
def undrain(args: argparse.Namespace, backend: Backend, url: str) -> int:
    require_site(backend, args.site, url)
    row = undrain_node(backend, args.site, args.node)
    data = _row_json(row, backend.now(), _held(backend, args.site, args.node))
    emit(
        args,
        data,
        lambda: f"undrained {row.name} of site {args.site!r}: the leader gives it its share back",
    )
    return 0


def _held(backend: Backend, site: str, name: str) -> int:
    return sum(1 for owner in backend.read_cluster(site).tokens.owner if owner == name)


def _row_json(row: NodeRecord, now: float, held: int) -> Json:
    return {
        "node": row.name,
        "drained": row.is_drained(now),
        "drained_at": row.drained_at,
        "drain_until": row.drain_until,
        "drain_note": row.drain_note,
        "live": rules.is_live(row, now),
        "tokens": held,
    }


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (containers)
        return ""
