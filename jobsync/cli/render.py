"""Human output: aligned tables, ages and times (JSON output skips all of this)."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from operator import itemgetter

from jobsync.cli.report import Json, ranges


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces; ``-`` for None."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = [_line(headers, widths)] + [_line(row, widths) for row in cells]
    return "\n".join(lines)


def _line(values: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else ""
    return str(value)


def age(seconds: object) -> str:
    """``0.4s``, ``12s``, ``3m10s``, ``2h05m``, ``3d04h``."""
    if not isinstance(seconds, (int, float)):
        return "-"
    s = float(seconds)
    sign, s = ("-" if s < 0 else ""), abs(s)
    if s < 10:
        return f"{sign}{s:.1f}s"
    whole = int(s)
    if whole < 60:
        return f"{sign}{whole}s"
    if whole < 3600:
        return f"{sign}{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{sign}{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{sign}{whole // 86400}d{whole % 86400 // 3600:02d}h"


def stamp(epoch: object) -> str:
    """A backend timestamp as UTC ISO 8601 to the second."""
    if not isinstance(epoch, (int, float)):
        return "-"
    moment = datetime.datetime.fromtimestamp(float(epoch), datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


Column = tuple[str, Callable[[Json], object]]
"""A table's column: its header, and how to read its cell from one report row."""


def rows_table(columns: Sequence[Column], rows: Sequence[Json], empty: str) -> str:
    """``table`` of ``rows``, one line each, read through ``columns``; ``empty`` if none."""
    if not rows:
        return empty
    return table(
        [header for header, _ in columns], [[cell(r) for _, cell in columns] for r in rows]
    )


def _with_maintenance(node: Json) -> object:
    """A node's state, and its maintenance (draining, drained) when it is in one."""
    return f"{node['state']}, {node['maintenance']}" if node.get("maintenance") else node["state"]


NODE_COLUMNS: tuple[Column, ...] = (
    ("NODE", itemgetter("name")),
    ("STATE", _with_maintenance),
    ("HEARTBEAT", lambda n: age(n["heartbeat_age_sec"]) + " ago"),
    ("UP", lambda n: age(n["uptime_sec"]) if n["uptime_sec"] is not None else "- (dead)"),
    ("TOKENS", itemgetter("tokens")),
    ("CAPACITY", lambda n: f"{n.get('capacity', 1.0):g}"),
    ("PENDING", itemgetter("pending_releases")),
    ("INCARN", itemgetter("incarnation")),
    ("LEADER", itemgetter("leader")),
)

HISTORY_COLUMNS: tuple[Column, ...] = (
    ("GEN", itemgetter("generation")),
    ("WHEN", lambda r: stamp(r["at"])),
    ("AGO", lambda r: age(r["age_sec"])),
    ("LEADER", itemgetter("leader")),
    ("TRIGGER", itemgetter("trigger")),
    ("MOVED", itemgetter("moved")),
    ("UNOWNED", itemgetter("unowned")),
    ("PLAN", lambda r: f"{r['duration_ms']}ms"),
    ("NODES AFTER", lambda r: ",".join(strings(r["nodes_after"])) or "(none)"),
)


def nodes_table(nodes: Sequence[Json]) -> str:
    return rows_table(NODE_COLUMNS, nodes, "(no nodes)")


def history_table(rows: Sequence[Json]) -> str:
    return rows_table(HISTORY_COLUMNS, rows, "(no rebalances recorded)")


def status_text(report: Json, dsn: str) -> str:
    balance = report["balance"]
    assert isinstance(balance, dict)
    nodes = report["nodes"]
    assert isinstance(nodes, list)
    lines = [
        f"site {report['site']!r} at {dsn}",
        f"  tokens {report['total_tokens']} ({report['hash_function']}), "
        f"generation {report['generation']}, backend time {stamp(report['now'])}",
        f"  leader: {report['leader'] or '(none: no live node)'}",
        "",
        nodes_table(nodes),
        "",
    ]
    if balance["min"] is None:
        lines.append("balance:           (no live node)")
    else:
        lines.append(
            f"balance:           {balance['min']}..{balance['max']} tokens per live node "
            f"(max-min {balance['spread']})"
        )
    lines += [
        f"unowned tokens:    {_tokens(report['unowned_tokens'])}",
        f"held by non-live:  {_tokens(report['stranded_tokens'])}",
        f"pending releases:  {report['pending_releases']}",
        f"locks:             {report['locks']}",
        f"unsatisfied pins:  {_pins(report['unsatisfied_pins'])}",
        f"lock conflicts:    {_conflicts(report['lock_conflicts'])}",
        *_hot(report.get("hot_tokens")),
        "",
        "recent rebalances:",
        history_table(_dicts(report["recent_rebalances"])),
        "",
    ]
    found = strings(report["problems"])
    lines.append("problems: " + ("; ".join(found) if found else "none"))
    return "\n".join(lines)


def _hot(value: object) -> list[str]:
    """The HOT line: tokens measured hot, and how to spread them (none: no line)."""
    ids = [int(str(t)) for t in value] if isinstance(value, list) else []
    if not ids:
        return []
    return [
        f"HOT:               token(s) {', '.join(map(str, ids[:10]))}"
        f"{', ...' if len(ids) > 10 else ''} each carry more than a node's share of the "
        "measured load; spread their tasks over more tokens (add a salt to the task id: "
        "'customer-7#0' .. 'customer-7#7')"
    ]


def _tokens(value: object) -> str:
    ids = [int(str(t)) for t in value] if isinstance(value, list) else []
    return f"{len(ids)} ({ranges(ids)})" if ids else "0"


def _pins(value: object) -> str:
    pins = _dicts(value)
    if not pins:
        return "none"
    return "; ".join(f"token {p['token']} (task {p['task_id']!r}) -> {p['patterns']}" for p in pins)


def _conflicts(value: object) -> str:
    found = _dicts(value)
    if not found:
        return "none"
    return "; ".join(
        f"token {c['token']}: {c['winner']!r} decides over {c['losers']}" for c in found
    )


def _dicts(value: object) -> list[Json]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []
