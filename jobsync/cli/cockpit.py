"""The operator's cockpit: ``dashboard``, ``explain`` and the what-if ``plan``.

Each command is an observer like the others (``commands.py``): it reads
through the Backend protocol and writes nothing.  ``dashboard`` serves the
live page (``jobsync.dashboard``) until interrupted; ``explain`` says why a
task is where it is; ``plan`` says what the leader would do if workers came
or went or locks were added.  The reports are ``cli.insight``'s.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import sys

from jobsync.backends.base import Backend
from jobsync.cli import render
from jobsync.cli.commands import emit, require_site, with_backend
from jobsync.cli.insight import WhatIf, explain_report, parse_capacity, parse_pin, plan_report
from jobsync.cli.parsers import Shared, Subparsers
from jobsync.cli.report import Json, ranges


def add_commands(sub: Subparsers, shared: Shared) -> None:
    """Register ``dashboard``, ``explain`` and ``plan`` on the main parser."""
    p = sub.add_parser(
        "dashboard",
        parents=[shared.conn, shared.site],
        help="serve a live, read-only web page of the site",
    )
    p.add_argument(
        "--port", type=_port, default=8080, help="TCP port (default 8080; 0 picks a free one)"
    )
    p.add_argument(
        "--bind",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    p.set_defaults(handler=dashboard)

    p = sub.add_parser(
        "explain", parents=shared.site_json, help="why each task is where it is, and its claim"
    )
    p.add_argument("task_ids", metavar="TASK_ID", nargs="+", help="task ids to explain")
    p.add_argument(
        "--date",
        type=_date,
        metavar="YYYY-MM-DD",
        help="the claims' date (default: today on the database's clock, UTC)",
    )
    p.set_defaults(handler=explain)

    p = sub.add_parser(
        "plan", parents=shared.site_json, help="what the leader would do if ... (changes nothing)"
    )
    p.add_argument(
        "--add", action="append", default=[], metavar="NAME", help="a worker joins (repeatable)"
    )
    p.add_argument(
        "--remove",
        action="append",
        default=[],
        metavar="NAME",
        help="a live worker leaves (repeatable)",
    )
    p.add_argument(
        "--capacity",
        action="append",
        default=[],
        metavar="NAME=C",
        help="a worker's capacity: its share of tokens is proportional to it (repeatable)",
    )
    p.add_argument(
        "--pin",
        action="append",
        default=[],
        metavar="TASK=PATTERN[,PATTERN...]",
        help="a lock on TASK, patterns in order of preference (repeatable)",
    )
    p.set_defaults(handler=what_if)


# -- dashboard ------------------------------------------------------------------------
@with_backend
def dashboard(args: argparse.Namespace, backend: Backend, url: str) -> int:
    from jobsync.dashboard import Dashboard

    require_site(backend, args.site, url)
    board = Dashboard(backend, args.site, host=args.bind, port=args.port)
    with board:
        print(f"jobsync dashboard for site {args.site!r}: {board.address}", flush=True)
        if not board.address.startswith(("http://127.", "http://localhost", "http://[::1]")):
            print("note: listening beyond this machine; the page is read-only", file=sys.stderr)
        with contextlib.suppress(KeyboardInterrupt):
            board.wait()
    return 0


# -- explain ----------------------------------------------------------------------------
@with_backend
def explain(args: argparse.Namespace, backend: Backend, url: str) -> int:
    require_site(backend, args.site, url)
    view = backend.read_cluster(args.site)
    date = args.date or datetime.datetime.fromtimestamp(view.now, datetime.timezone.utc).date()
    audit = backend.read_audit(args.site, date)
    entries = explain_report(view, audit, date, args.task_ids)
    emit(args, {"site": args.site, "tasks": entries}, lambda: _explain_text(entries))
    return 0


def _explain_text(entries: list[Json]) -> str:
    blocks = []
    for e in entries:
        pin, claim = e["pin"], e["claim"]
        assert isinstance(pin, dict) and isinstance(claim, dict)
        owner = (
            f"{e['owner']} ({e['owner_state']}), incarnation {e['incarnation']}, epoch {e['epoch']}"
            if e["owner"] is not None
            else f"none (unowned), epoch {e['epoch']}"
        )
        if e["pending"]:
            owner += f"; release in flight to {e['pending_to'] or '(unowned)'}"
        lock = (
            f"lock on task {pin['lock']!r} by {pin['created_by']}: {pin['patterns']}; "
            if pin["lock"] is not None
            else ""
        )
        lines = [
            f"task {e['task_id']!r}",
            f"  token   {e['token']} ({e['hash_function']} mod {e['total_tokens']})",
            f"  owner   {owner}",
            f"  pin     {lock}{pin['rule']}",
            f"  claim   {e['date']}: {claim['text']}",
        ]
        if pin.get("overrides"):
            lines.append(f"  note    this lock decides over {pin['overrides']} on the same token")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


# -- what-if ------------------------------------------------------------------------------
@with_backend
def what_if(args: argparse.Namespace, backend: Backend, url: str) -> int:
    change = WhatIf(
        add=tuple(args.add),
        remove=tuple(args.remove),
        pins=tuple(parse_pin(p) for p in args.pin),
        capacities=tuple(parse_capacity(c) for c in args.capacity),
    )
    require_site(backend, args.site, url)
    report = plan_report(backend.read_cluster(args.site), change)
    emit(args, report, lambda: _plan_text(report))
    return 0


def _plan_text(r: Json) -> str:
    workers = (
        [w for w in r["workers"] if isinstance(w, dict)] if isinstance(r["workers"], list) else []
    )
    lines = [
        f"what-if for site {r['site']!r} (generation {r['generation']}); nothing is written",
        f"workers now:   {', '.join(render.strings(r['nodes_now'])) or '(none)'}",
        f"workers after: {', '.join(render.strings(r['nodes_after'])) or '(none)'}",
        "",
        render.table(
            ["WORKER", "CHANGE", "CAPACITY", "NOW", "AFTER", "GAINS", "GIVES UP"],
            [
                [
                    w["name"],
                    w["change"] or None,
                    f"{w['capacity']:g}",
                    w["tokens_now"],
                    w["tokens_after"],
                    w["gains"],
                    w["gives_up"],
                ]
                for w in workers
            ],
        ),
        "",
        f"tokens moved:  {r['moved']} (fewest possible: {r['lower_bound']})",
        f"unowned after: {_count(r['unowned_after'])} (now {_count(r['unowned_now'])})",
    ]
    broken = r["broken_pins"]
    assert isinstance(broken, list)
    lines.append(
        "broken pins:   "
        + (
            "; ".join(
                f"token {b['token']} (task {b['task_id']!r}) -> {b['patterns']}" for b in broken
            )
            or "none"
        )
    )
    conflicts = r["lock_conflicts"]
    assert isinstance(conflicts, list)
    for c in conflicts:
        lines.append(
            f"note: on token {c['token']} the earlier lock on {c['winner']!r} decides; "
            f"the pin on {c['losers']} would be ignored"
        )
    if r["moves_without_changes"]:
        lines.append(
            f"note: the site is not settled: without these changes the leader would move "
            f"{r['moves_without_changes']} token(s) now"
        )
    return "\n".join(lines)


def _count(value: object) -> str:
    ids = [int(str(t)) for t in value] if isinstance(value, list) else []
    return f"{len(ids)} ({ranges(ids)})" if ids else "0"


# -- argument types -------------------------------------------------------------------
def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port between 0 and 65535, got {text!r}")
    return value


def _date(text: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None
