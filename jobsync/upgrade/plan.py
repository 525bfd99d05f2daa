"""What ``jobsync migrate`` will do to a PostgreSQL database, read without writing.

``inspect`` reads, in one read-only transaction under the migrations' lock, this library's schema
version, the original's tables, its live workers, the handover if one was
armed, and how much state would be carried; ``describe`` says it in lines an
operator reads before anything changes (``--dry-run`` prints only these).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from psycopg import sql

from jobsync.backends.postgres import original as O
from jobsync.backends.postgres import schema as S
from jobsync.backends.postgres.original import Conn, Handover, Original


@attrs.frozen(kw_only=True)
class Plan:
    schema: str
    prefix: str
    version: int
    """This library's schema version found (0: none)."""
    original: Original | None
    wanted: Handover | None
    """What this run would arm (None when there is no original to upgrade)."""
    earlier: Handover | None
    """The handover row found, armed or done by an earlier run."""
    live: tuple[tuple[str, float], ...] = ()
    locks: int = 0
    locks_skipped: int = 0
    audit: int = 0
    claims: int = 0


def inspect(conn: Conn, schema: str, prefix: str, want: Callable[[Original], Handover]) -> Plan:
    """Read the plan in a read-only transaction (``conn`` is in autocommit), holding
    the migrations' advisory lock shared, so no upgrade runs while it reads.
    ``want`` says what would be armed for the original's tables, if found."""
    with conn.transaction():
        conn.execute("SET TRANSACTION READ ONLY")
        key = S.advisory_key(schema, prefix)
        conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (key,))
        version = S.installed_version(conn, schema, prefix)
        found = O.find(conn, schema, prefix)
        earlier = O.read_handover(conn, schema, prefix)
        if found is None:
            return Plan(
                schema=schema,
                prefix=prefix,
                version=version,
                original=found,
                wanted=None,
                earlier=earlier,
            )
        wanted = want(found)
        locks = O.lock_rows(conn, found, wanted)
        every = _count(conn, found, "lock")
        return Plan(
            schema=schema,
            prefix=prefix,
            version=version,
            original=found,
            wanted=wanted,
            earlier=earlier,
            live=O.live_workers(conn, found, wanted.original_timeout, wanted.timezone),
            locks=len(locks),
            locks_skipped=every - len(locks),
            audit=_audit(conn, found),
            claims=_count(conn, found, "claim"),
        )


def _count(conn: Conn, found: Original, table: str) -> int:
    if table not in found.columns:
        return 0
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(found.ident(table))).fetchone()
    return 0 if row is None else int(row[0])


def _audit(conn: Conn, found: Original) -> int:
    task = found.audit_task
    if task is None:
        return 0
    query = sql.SQL(
        "SELECT count(*) FROM (SELECT DISTINCT date, {task} FROM {audit}"
        " WHERE {task} IS NOT NULL) d"
    ).format(task=sql.Identifier(task), audit=found.ident("audit"))
    row = conn.execute(query).fetchone()
    return 0 if row is None else int(row[0])


def describe(plan: Plan, target_version: int = S.SCHEMA_VERSION) -> list[str]:
    """The plan in lines, for an operator."""
    where = f"PostgreSQL schema {plan.schema!r}, table prefix {plan.prefix!r}"
    found, wanted = plan.original, plan.wanted
    if found is None or wanted is None:
        lines = [f"{where}: no tables of the original jobsync here"]
        if plan.earlier is not None and plan.earlier.done:
            lines.append(_earlier(plan.earlier, plan.prefix))
        if plan.version < target_version:
            lines.append(
                f"will create or upgrade this library's schema: "
                f"version {plan.version} -> {target_version}"
            )
        else:
            lines.append(f"this library's schema is at version {plan.version}: nothing to do")
        return lines
    aside = ", ".join(f"{found.name(t)} -> {plan.prefix}{O.ASIDE}{t}" for t in found.tables)
    live = ", ".join(f"{name} ({age:.1f} s ago)" for name, age in plan.live) or "none"
    lines = [
        f"{where}: found the original jobsync's tables {found.describe()}",
        f"original workers live (heartbeat within {wanted.original_timeout:g} s): {live}",
        f"1. move the original's tables aside, nothing deleted: {aside}",
        f"2. create this library's tables: version 0 -> {target_version}",
        f"3. create site {wanted.site!r} with {wanted.total_tokens} tokens, hash "
        f"{wanted.hash_function} (SYNC_TOTAL_TOKENS, SYNC_HASH_FUNCTION: the new workers "
        "must use the same)",
        f"4. carry {plan.locks} unexpired lock(s) with their creator, reason and expiry"
        + (f"; leave {plan.locks_skipped} expired or patternless" if plan.locks_skipped else ""),
        f"5. carry {plan.audit} audit row(s), one per task and date, as completed tasks",
    ]
    if plan.claims:
        lines.append(
            f"the original's {plan.claims} claim row(s) ({found.name('claim')}) stay aside: "
            "claims of stopped workers hold nothing"
        )
    if any(found.naive(t, c) for t, c in (("node", "last_heartbeat"), ("audit", "created_on"))):
        lines.append(f"the 1.1 layout's zone-less times are read in {wanted.timezone} (--timezone)")
    if plan.live:
        lines.append(
            "original workers are live, so steps 1-5 wait: the handover is armed, new workers "
            "claim nothing until the last original worker stops or misses its heartbeat, and "
            "the first of them to start after that carries the steps out"
        )
    return lines


def _earlier(done: Handover, prefix: str) -> str:
    return (
        f"upgraded from the original jobsync earlier: its tables are aside as "
        f"{prefix}{O.ASIDE}*, {done.locks_carried} lock(s) and {done.audit_carried} audit "
        f"row(s) were carried into site {done.site!r}"
    )
