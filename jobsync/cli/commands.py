"""The operator's commands: each reads or writes through the Backend protocol.

Every command takes the parsed arguments and an open backend handle and
returns an exit code.  Nothing here registers a node: the command line is an
observer.  Destructive commands (``locks clear``, ``prune``, ``site reset``)
ask first unless ``--yes``; with no terminal to ask on they refuse.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from collections.abc import Callable
from operator import itemgetter

from jobsync.backends.base import Backend, LockSpec, SiteInfo
from jobsync.backends.url import redact
from jobsync.cli import render
from jobsync.cli.connect import open_cli_backend, parse_dsn, resolve_url
from jobsync.cli.report import (
    Json,
    history_rows,
    node_rows,
    ranges,
    status_report,
    token_rows,
    which_report,
)
from jobsync.core import rules
from jobsync.core.errors import ConflictError, InvalidArgument
from jobsync.core.hashing import canonical, token_function
from jobsync.core.patterns import validate_node_name, validate_pattern
from jobsync.runtime.task import lock_views

DEFAULT_CREATOR = "jobsync-cli"
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class CommandRefused(Exception):
    """The command did not run: declined, unconfirmed, or refused by the database."""


# -- helpers ------------------------------------------------------------------
def parse_duration(text: str) -> float:
    """``30d``, ``12h``, ``45m``, ``90s`` (decimals allowed) -> seconds."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", str(text))
    if found is None:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: use a number and a unit, such as 30d, 12h, 45m or 90s"
        )
    return float(found.group(1)) * _UNITS[found.group(2)]


def confirm(action: str, yes: bool) -> None:
    """Ask ``action?`` on the terminal; raise CommandRefused unless the answer is yes."""
    if yes:
        return
    stdin = sys.stdin
    if stdin is None or not stdin.isatty():
        raise CommandRefused(
            f"refusing to {action} without confirmation: stdin is not a terminal (pass --yes)"
        )
    sys.stderr.write(f"{action}? [y/N] ")
    sys.stderr.flush()
    if stdin.readline().strip().lower() not in ("y", "yes"):
        raise CommandRefused("cancelled: nothing changed")


def emit(args: argparse.Namespace, data: object, text: Callable[[], str]) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        print(text())


def confirmed(
    args: argparse.Namespace,
    question: str,
    change: Callable[[], Json],
    text: Callable[[Json], str],
) -> int:
    """Ask ``question`` (unless ``--yes``), make the change, report it with the site."""
    confirm(question, args.yes)
    done = {"site": args.site, **change()}
    emit(args, done, lambda: text(done))
    return 0


def require_site(backend: Backend, site: str, url: str) -> SiteInfo:
    info = backend.site_info(site)
    if info is None:
        raise InvalidArgument(f"site {site!r} does not exist at {redact(url)}")
    return info


def _only_site(backend: Backend, url: str) -> str:
    sites = backend.list_sites()
    if len(sites) == 1:
        return sites[0]
    if not sites:
        raise InvalidArgument(f"no site exists at {redact(url)}")
    raise InvalidArgument(f"--site is needed: the sites at {redact(url)} are {', '.join(sites)}")


def with_backend(
    command: Callable[[argparse.Namespace, Backend, str], int],
) -> Callable[[argparse.Namespace], int]:
    """Open the backend the arguments name, run ``command``, close it."""

    def run(args: argparse.Namespace) -> int:
        url = resolve_url(args.dsn)
        backend = open_cli_backend(url)
        try:
            if getattr(args, "site", "") is None:
                args.site = _only_site(backend, url)
            return command(args, backend, url)
        finally:
            backend.close()

    run.__name__ = command.__name__
    return run


# -- reading --------------------------------------------------------------------
@with_backend
def sites(args: argparse.Namespace, backend: Backend, url: str) -> int:
    rows = []
    for name in backend.list_sites():
        now, nodes = backend.read_nodes(name)
        info = backend.site_info(name)
        rows.append(
            {
                "site": name,
                "live_nodes": sum(rules.is_live(n, now) for n in nodes),
                "total_tokens": info.total_tokens if info else None,
                "hash_function": info.hash_function if info else None,
            }
        )

    def text() -> str:
        if not rows:
            return "no sites"
        lines = [f"{'site':<24} {'live':>5} {'tokens':>8}  hash"]
        lines += [
            f"{r['site']:<24} {r['live_nodes']:>5} {r['total_tokens']:>8}  {r['hash_function']}"
            for r in rows
        ]
        return "\n".join(lines)

    emit(args, {"sites": rows}, text)
    return 0


@with_backend
def status(args: argparse.Namespace, backend: Backend, url: str) -> int:
    require_site(backend, args.site, url)
    view = backend.read_cluster(args.site)
    report = status_report(view, backend.read_history(args.site, limit=args.history))
    emit(args, report, lambda: render.status_text(report, redact(url)))
    return 1 if args.check and report["problems"] else 0


@with_backend
def nodes(args: argparse.Namespace, backend: Backend, url: str) -> int:
    require_site(backend, args.site, url)
    rows = node_rows(backend.read_cluster(args.site))
    emit(args, {"site": args.site, "nodes": rows}, lambda: render.nodes_table(rows))
    return 0


@with_backend
def tokens(args: argparse.Namespace, backend: Backend, url: str) -> int:
    require_site(backend, args.site, url)
    if args.node is not None:
        validate_node_name(args.node)
    rows = token_rows(backend.read_cluster(args.site), args.node)
    data = {"site": args.site, "node": args.node, "count": len(rows), "tokens": rows}
    emit(args, data, lambda: _tokens_text(rows, args.node))
    return 0


def _tokens_text(rows: list[Json], node: str | None) -> str:
    by_owner: dict[str | None, list[int]] = defaultdict(list)
    pending: list[int] = []
    for row in rows:
        by_owner[row["owner"] if isinstance(row["owner"], str) else None].append(
            int(str(row["token"]))
        )
        if row["pending"]:
            pending.append(int(str(row["token"])))
    if node is not None and not rows:
        return f"{node} holds no tokens"
    order = sorted(by_owner, key=lambda o: (o is None, o or ""))
    table = render.table(
        ["OWNER", "COUNT", "TOKENS"],
        [
            [o if o is not None else "(unowned)", len(by_owner[o]), ranges(by_owner[o])]
            for o in order
        ],
    )
    if pending:
        table += f"\npending releases: {len(pending)} ({ranges(pending)})"
    return table


@with_backend
def which(args: argparse.Namespace, backend: Backend, url: str) -> int:
    require_site(backend, args.site, url)
    report = which_report(backend.read_cluster(args.site), args.task_id)
    emit(args, report, lambda: _which_text(report))
    return 0


def _which_text(r: Json) -> str:
    owner = r["owner"]
    lines = [
        f"task {r['task_id']!r} -> token {r['token']} "
        f"({r['hash_function']} mod {r['total_tokens']})",
        f"owner: {owner} ({r['owner_state']}), incarnation {r['incarnation']}, epoch {r['epoch']}"
        if owner is not None
        else f"owner: none (unowned), epoch {r['epoch']}",
    ]
    if r["pending"]:
        lines.append(f"release pending to: {r['pending_to'] or '(unowned)'}")
    if r["pinned_by"] is not None:
        lines.append(f"pinned by the lock on task {r['pinned_by']!r}: {r['pin_patterns']}")
    return "\n".join(lines)


@with_backend
def history(args: argparse.Namespace, backend: Backend, url: str) -> int:
    require_site(backend, args.site, url)
    rows = history_rows(backend.read_history(args.site, limit=args.limit), backend.now())
    emit(args, {"site": args.site, "rebalances": rows}, lambda: render.history_table(rows))
    return 0


@with_backend
def site_show(args: argparse.Namespace, backend: Backend, url: str) -> int:
    info = require_site(backend, args.site, url)
    data = _site_json(info)
    emit(args, data, lambda: "\n".join(f"{k}: {v}" for k, v in data.items()))
    return 0


def _site_json(info: SiteInfo) -> Json:
    return {
        "site": info.site,
        "total_tokens": info.total_tokens,
        "hash_function": info.hash_function,
        "generation": info.generation,
        "change_counter": info.change_counter,
        "created_at": render.stamp(info.created_at),
    }


# -- locks ------------------------------------------------------------------------
@with_backend
def locks_list(args: argparse.Namespace, backend: Backend, url: str) -> int:
    require_site(backend, args.site, url)
    rows: list[Json] = [
        {**row, "token": r.token, "patterns": list(r.patterns)}
        for r, row in lock_views(backend.list_locks(args.site))
    ]
    emit(args, {"site": args.site, "locks": rows}, lambda: _locks_text(rows))
    return 0


_LOCK_COLUMNS: tuple[render.Column, ...] = (
    ("TASK", itemgetter("task_id")),
    ("TOKEN", itemgetter("token")),
    ("PATTERNS", lambda r: ",".join(render.strings(r["patterns"]))),
    ("CREATOR", itemgetter("created_by")),
    ("CREATED", lambda r: render.stamp(r["created_at"])),
    ("EXPIRES", lambda r: "never" if r["expires_at"] is None else render.stamp(r["expires_at"])),
    ("REASON", itemgetter("reason")),
    ("CONFLICT", lambda r: f"loses to {r['conflict_with']!r}" if r["conflict_with"] else None),
)


def _locks_text(rows: list[Json]) -> str:
    return render.rows_table(_LOCK_COLUMNS, rows, "(no locks)")


@with_backend
def locks_add(args: argparse.Namespace, backend: Backend, url: str) -> int:
    info = require_site(backend, args.site, url)
    creator = validate_node_name(args.creator)
    patterns = tuple(validate_pattern(p) for p in args.patterns)
    key = canonical(args.task_id)
    token = token_function(info.total_tokens, info.hash_function)(key)
    spec = LockSpec(
        task_key=key, token=token, patterns=patterns, reason=args.reason, expires_in=args.expires_in
    )
    backend.replace_locks(args.site, creator, [spec], clear_existing=False)
    data = {"site": args.site, "task_id": key, "token": token, "patterns": list(patterns)}
    data["creator"] = creator
    emit(
        args, data, lambda: f"locked task {key!r} (token {token}) to {list(patterns)} as {creator}"
    )
    return 0


@with_backend
def locks_clear(args: argparse.Namespace, backend: Backend, url: str) -> int:
    require_site(backend, args.site, url)
    creator = None if args.all else validate_node_name(args.creator)
    present = [
        r for r in backend.list_locks(args.site) if creator is None or r.created_by == creator
    ]
    whose = "every lock" if creator is None else f"the locks created by {creator!r}"
    return confirmed(
        args,
        f"clear {whose} ({len(present)}) in site {args.site!r}",
        lambda: {"creator": creator, "cleared": backend.clear_locks(args.site, creator)},
        lambda done: f"cleared {done['cleared']} lock(s)",
    )


# -- maintenance --------------------------------------------------------------------
@with_backend
def prune(args: argparse.Namespace, backend: Backend, url: str) -> int:
    require_site(backend, args.site, url)
    seconds = args.older_than

    def summary(done: Json) -> str:
        counts = done["deleted"]
        assert isinstance(counts, dict)
        return "deleted " + (", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "nothing")

    return confirmed(
        args,
        f"delete audit rows and rebalance history older than {render.age(seconds)} "
        f"from site {args.site!r}",
        lambda: {"older_than_sec": seconds, "deleted": dict(backend.prune(args.site, seconds))},
        summary,
    )


@with_backend
def site_reset(args: argparse.Namespace, backend: Backend, url: str) -> int:
    info = require_site(backend, args.site, url)
    token_function(args.tokens, args.hash)  # validates both before asking
    confirm(
        f"reset site {args.site!r} from {info.total_tokens} tokens ({info.hash_function}) to "
        f"{args.tokens} tokens ({args.hash}): every token becomes unowned and open claims are "
        "released",
        args.yes,
    )
    try:
        new = backend.reset_site(args.site, args.tokens, args.hash)
    except ConflictError as exc:
        raise CommandRefused(
            f"site reset refused: {exc}; stop every worker of the site first"
        ) from exc
    data = _site_json(new)
    emit(
        args,
        data,
        lambda: f"site {new.site!r} now has {new.total_tokens} tokens ({new.hash_function})",
    )
    return 0


def migrate(args: argparse.Namespace) -> int:
    url = resolve_url(args.dsn)
    target = parse_dsn(url)
    if target.scheme == "postgresql":
        from jobsync import upgrade
        from jobsync.runtime.config import Settings

        coordination = Settings().coordination  # the workers' token count and hash
        upgrade.migrate(
            target.dsn,
            schema=target.schema,
            prefix=target.prefix,
            site=args.site,
            total_tokens=coordination.total_tokens,
            hash_function=coordination.hash_function,
            original_timeout=args.original_timeout,
            timezone=args.timezone,
            dry_run=args.dry_run,
        )
        return 0
    if args.dry_run:
        print(f"SQLite: would create or upgrade the schema in {target.path!r}")
        return 0
    backend = open_cli_backend(url, create=True)  # SQLite creates its schema on open
    backend.close()
    print(f"SQLite schema ready in {target.path!r}")
    return 0
