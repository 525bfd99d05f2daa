"""The original jobsync's tables (PyPI ``jobsync`` 1.x) where this library's would go.

Law: this library never writes to a table of the original's and never creates
its own over one.  The original (1.1 to 1.3.14) keeps ``node``, ``token``,
``lock``, ``audit``, ``claim``, ``checkpoint``, ``inst``, ``leader_lock``,
``rebalance_lock`` and ``rebalance`` under its ``appname`` prefix (``sync_``
by default), the names this library's tables take.  So before creating its
schema a handle looks, and:

- finds nothing of the original's: carries on;
- finds the original's tables and no armed handover: raises
  ``OriginalSchemaFound``, whose message names the command
  (``python -m jobsync migrate``) that upgrades the database;
- finds an armed handover (the ``v1_upgrade`` row that command writes) while
  an original worker still heartbeats: raises ``HandoverPending``, a
  transient error, so a new worker claims nothing and tries again;
- finds an armed handover and no live original worker: moves the original's
  tables aside (``sync_node`` becomes ``sync_v1_node``; nothing is deleted)
  and, once this library's tables exist, carries the original's unexpired
  locks and its audit into them, in the migrations' one transaction and
  under their advisory lock, so concurrent workers and commands do it once.

An original worker is live while its ``last_heartbeat`` is within the
original's heartbeat timeout (15 s unless its configuration said otherwise;
the handover records the value) of the server's clock: the original's own
rule for a dead node.  A worker that stops cleanly deletes its row at once.

The layouts differ by release, so they are told apart by columns, not by
version: the audit's task column is ``item`` (1.1 to 1.3.0) or ``task_id``;
a lock pins a task (``task_id``, ``node_patterns`` as JSON) or, in 1.1, a
token (``token_id``, one ``node_pattern``); 1.1 stores times without a time
zone, read in the handover's ``timezone``.  A 1.1 token lock is carried as a
lock on that token (task key ``token:N``), which means the same tasks only
under the ``md5`` hash and the original's token count: the handover refuses
other constants for such locks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import psycopg
from psycopg import sql

from jobsync.backends.postgres import queries
from jobsync.backends.postgres.schema import identifiers
from jobsync.core.errors import HandoverPending, OriginalSchemaFound, SchemaError
from jobsync.core.hashing import token_function

Conn = psycopg.Connection[tuple[Any, ...]]

TABLES = (
    "node",
    "token",
    "lock",
    "audit",
    "claim",
    "checkpoint",
    "inst",
    "leader_lock",
    "rebalance_lock",
    "rebalance",
)
"""The original's tables, by short name (its ``get_table_names`` keys, lowercased)."""
ASIDE = "v1_"
"""What the original's tables are renamed to: ``{prefix}v1_{name}``."""
MARKER = "v1_upgrade"
"""The handover's one-row table, ``{prefix}v1_upgrade``: armed, then done."""
COMMAND = "python -m jobsync migrate"
GUIDE = 'docs/OPERATOR_GUIDE.md, "Upgrading from the original jobsync"'
AUDIT_BATCH = 20_000
"""Audit rows read and written per batch while carrying the audit over."""
TOKEN_LOCK_HASH = "md5"
"""The hash a 1.1 token lock's token number is under."""


@attrs.frozen(kw_only=True)
class Original:
    """The original's tables found under (schema, prefix), with their columns."""

    schema: str
    prefix: str
    columns: Mapping[str, Mapping[str, str]]
    """Short table name -> column name -> SQL type, for each table found."""
    aside: bool = False
    """True for the tables as moved aside (``{prefix}v1_*``)."""

    @property
    def tables(self) -> tuple[str, ...]:
        return tuple(t for t in TABLES if t in self.columns)

    def name(self, table: str) -> str:
        return f"{self.prefix}{ASIDE if self.aside else ''}{table}"

    def ident(self, table: str) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name(table))

    def naive(self, table: str, column: str) -> bool:
        """True if the column holds times without a time zone (the 1.1 layout)."""
        return self.columns.get(table, {}).get(column) == "timestamp without time zone"

    @property
    def audit_task(self) -> str | None:
        cols = self.columns.get("audit", {})
        return next((c for c in ("task_id", "item") if c in cols), None)

    @property
    def token_locks(self) -> bool:
        """True for the 1.1 lock table (a pattern per token, not per task)."""
        return "node_pattern" in self.columns.get("lock", {})

    @property
    def layout(self) -> str:
        return "1.1" if self.token_locks or self.naive("node", "last_heartbeat") else "1.3"

    def describe(self) -> str:
        shown = ", ".join(self.name(t) for t in self.tables)
        return f"{shown} (the {self.layout} layout; schema {self.schema!r})"


@attrs.frozen(kw_only=True)
class Handover:
    """The armed upgrade: where the original's state goes and how its liveness is judged."""

    site: str
    total_tokens: int
    hash_function: str
    original_timeout: float
    """Seconds: an original worker is live while its heartbeat is younger."""
    timezone: str
    """The zone the 1.1 layout's times are in."""
    armed_by: str = ""
    done: bool = False
    locks_carried: int = 0
    audit_carried: int = 0


def find(conn: Conn, schema: str, prefix: str, *, aside: bool = False) -> Original | None:
    """The original's tables under (schema, prefix), or None if its node table is not
    there (this library's node table has a ``site`` column; the original's has not)."""
    probe = Original(schema=schema, prefix=prefix, columns={}, aside=aside)
    names = {probe.name(t): t for t in TABLES}
    rows = conn.execute(
        """SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
        FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
            AND NOT a.attisdropped
        WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind IN ('r', 'p')""",
        (schema, list(names)),
    ).fetchall()
    columns: dict[str, dict[str, str]] = {}
    for relname, column, kind in rows:
        columns.setdefault(names[relname], {})[column] = kind
    node = columns.get("node", {})
    if "site" in node or not {"name", "created_on", "last_heartbeat"} <= set(node):
        return None
    return attrs.evolve(probe, columns=columns)


def refusal(original: Original) -> OriginalSchemaFound:
    """The error a worker or a command meets on the original's tables."""
    return OriginalSchemaFound(
        f"this database holds the original jobsync's tables {original.describe()}, where "
        f"this library's tables go: run `{COMMAND} --dsn URL --site SITE` to carry its "
        "locks and audit over and move its tables aside (--dry-run shows the plan first; "
        "with original workers still running it arms a zero-downtime handover instead: "
        f"{GUIDE})"
    )


def refuse(conn: Conn, schema: str, prefix: str) -> None:
    """Raise ``OriginalSchemaFound`` if the original's tables are under (schema, prefix)."""
    original = find(conn, schema, prefix)
    if original is not None:
        raise refusal(original)


def _marker(schema: str, prefix: str) -> sql.Identifier:
    return sql.Identifier(schema, prefix + MARKER)


def read_handover(conn: Conn, schema: str, prefix: str) -> Handover | None:
    """The handover row, or None if no upgrade was ever armed here."""
    row = conn.execute("SELECT to_regclass(%s)", (f'"{schema}"."{prefix}{MARKER}"',)).fetchone()
    if row is None or row[0] is None:
        return None
    query = sql.SQL(
        """SELECT site, total_tokens, hash_function, original_timeout, timezone, armed_by,
            done_at IS NOT NULL, locks_carried, audit_carried FROM {}"""
    ).format(_marker(schema, prefix))
    found = conn.execute(query).fetchone()
    if found is None:
        return None
    return Handover(**dict(zip(_HANDOVER_FIELDS, found, strict=True)))


_HANDOVER_FIELDS = tuple(f.name for f in attrs.fields(Handover))


def arm(conn: Conn, schema: str, prefix: str, handover: Handover) -> None:
    """Create or replace the handover row (inside the caller's transaction)."""
    conn.execute(
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {} (
                singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
                site text NOT NULL, total_tokens integer NOT NULL,
                hash_function text NOT NULL, original_timeout double precision NOT NULL,
                timezone text NOT NULL, armed_by text NOT NULL,
                armed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                done_at timestamptz, locks_carried integer NOT NULL DEFAULT 0,
                audit_carried integer NOT NULL DEFAULT 0)"""
        ).format(_marker(schema, prefix))
    )
    conn.execute(
        sql.SQL(
            """INSERT INTO {} (site, total_tokens, hash_function, original_timeout, timezone,
                armed_by) VALUES (%s, %s, %s, %s, %s, %s)
            ON CONFLICT (singleton) DO UPDATE SET site = excluded.site,
                total_tokens = excluded.total_tokens, hash_function = excluded.hash_function,
                original_timeout = excluded.original_timeout, timezone = excluded.timezone,
                armed_by = excluded.armed_by, armed_at = excluded.armed_at"""
        ).format(_marker(schema, prefix)),
        (
            handover.site,
            handover.total_tokens,
            handover.hash_function,
            handover.original_timeout,
            handover.timezone,
            handover.armed_by,
        ),
    )


def _time(original: Original, table: str, column: str) -> sql.Composable:
    """The column as a timestamptz: 1.1's zone-less times read in ``%(tz)s``."""
    if original.naive(table, column):
        return sql.SQL("({} AT TIME ZONE %(tz)s)").format(sql.Identifier(column))
    return sql.Identifier(column)


def live_workers(
    conn: Conn, original: Original, timeout: float, timezone: str
) -> tuple[tuple[str, float], ...]:
    """(name, seconds since its heartbeat) of each original worker still live."""
    beat = _time(original, "node", "last_heartbeat")
    query = sql.SQL(
        """SELECT name, extract(epoch FROM clock_timestamp() - {beat})::float8 FROM {node}
        WHERE {beat} > clock_timestamp() - make_interval(secs => %(timeout)s)
        ORDER BY name"""
    ).format(beat=beat, node=original.ident("node"))
    rows = conn.execute(query, {"timeout": timeout, "tz": timezone}).fetchall()
    return tuple((str(name), float(age)) for name, age in rows)


def take_over(conn: Conn, schema: str, prefix: str) -> Callable[[], None] | None:
    """``schema.apply_migrations``' upgrade step, under its lock and in its transaction.

    Returns None if the original's tables are not here; raises as the module
    docstring says; else moves them aside and returns the step that carries
    their state over once this library's tables exist.
    """
    original = find(conn, schema, prefix)
    if original is None:
        return None
    handover = read_handover(conn, schema, prefix)
    if handover is None or handover.done:
        raise refusal(original)
    live = live_workers(conn, original, handover.original_timeout, handover.timezone)
    if live:
        shown = ", ".join(f"{name} ({age:.1f} s ago)" for name, age in live)
        raise HandoverPending(
            f"waiting for {len(live)} original jobsync worker(s) to stop or miss their "
            f"heartbeat for {handover.original_timeout:g} s before taking over: {shown}"
        )
    check_constants(original, handover)
    for table in original.tables:
        conn.execute(
            sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                original.ident(table), sql.Identifier(f"{prefix}{ASIDE}{table}")
            )
        )
    moved = attrs.evolve(original, aside=True)
    return lambda: carry(conn, moved, handover)


def check_constants(original: Original, handover: Handover) -> None:
    """Refuse constants under which the 1.1 layout's token locks would pin other tasks."""
    if original.token_locks and handover.hash_function != TOKEN_LOCK_HASH:
        raise SchemaError(
            f"the original's {original.name('lock')} pins token numbers under the "
            f"{TOKEN_LOCK_HASH} hash, and the site {handover.site!r} would use "
            f"{handover.hash_function!r}: run the upgrade with SYNC_HASH_FUNCTION="
            f"{TOKEN_LOCK_HASH} (and the original's SYNC_TOTAL_TOKENS), as the new workers "
            "must run, or clear those locks first"
        )


def carry(conn: Conn, original: Original, handover: Handover) -> None:
    """Carry the moved-aside tables' locks and audit into this library's (just created)
    tables, for the handover's site, and mark the handover done."""
    schema, prefix = original.schema, original.prefix
    ours = identifiers(schema, prefix)
    site = handover.site
    rendered = queries.render(conn, schema, prefix)
    conn.execute(
        rendered["ENSURE_SITE"],
        {"site": site, "total": handover.total_tokens, "hash": handover.hash_function},
    )
    token = token_function(handover.total_tokens, handover.hash_function)
    locks = lock_rows(conn, original, handover)
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL(
                """INSERT INTO {} (site, task_key, token_id, patterns, reason, created_by,
                    created_at, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (site, task_key) DO NOTHING"""
            ).format(ours["lock"]),
            [
                (site, key, tok if tok is not None else token(key), pats, *rest)
                for key, tok, pats, *rest in locks
            ],
        )
    audit = 0
    task = original.audit_task
    if task is not None:
        query = sql.SQL(
            """SELECT DISTINCT ON (date, {task}) date, {task}, node, {at} FROM {audit}
            WHERE {task} IS NOT NULL ORDER BY date, {task}, {at}"""
        ).format(
            task=sql.Identifier(task),
            at=_time(original, "audit", "created_on"),
            audit=original.ident("audit"),
        )
        copy = sql.SQL(
            """COPY {} (site, date, task_key, node, incarnation, token_id, epoch, status,
                claimed_at, completed_at) FROM STDIN"""
        ).format(ours["audit"])
        # A named (server-side) cursor reads in batches, each written by its own
        # COPY: the original's audit may be far larger than memory should hold.
        with conn.cursor(name="jobsync_original_audit") as read, conn.cursor() as write:
            read.execute(query, {"tz": handover.timezone})
            while batch := read.fetchmany(AUDIT_BATCH):
                with write.copy(copy) as out:
                    for day, key, node, at in batch:
                        out.write_row((site, day, key, node, 0, token(key), 0, "done", at, at))
                audit += len(batch)
    conn.execute(
        sql.SQL(
            "UPDATE {} SET done_at = clock_timestamp(), locks_carried = %s, audit_carried = %s"
        ).format(_marker(schema, prefix)),
        (len(locks), audit),
    )


LockRow = tuple[str, int | None, list[str], str | None, str, Any, Any]
"""(task key, token or None to hash the key, patterns, reason, creator, created, expires)."""


def lock_rows(conn: Conn, original: Original, handover: Handover) -> list[LockRow]:
    """The original's unexpired locks with usable patterns, as this library's lock rows."""
    if "lock" not in original.columns:
        return []
    by_token = original.token_locks
    key, pats = ("token_id", "node_pattern") if by_token else ("task_id", "node_patterns")
    query = sql.SQL(
        """SELECT {key}, {pats}, reason, coalesce(created_by, ''), {created}, {expires}
        FROM {lock} WHERE expires_at IS NULL OR {expires} > clock_timestamp()
        ORDER BY {created}"""
    ).format(
        key=sql.Identifier(key),
        pats=sql.Identifier(pats),
        created=_time(original, "lock", "created_at"),
        expires=_time(original, "lock", "expires_at"),
        lock=original.ident("lock"),
    )
    out: list[LockRow] = []
    for task, raw, reason, creator, created, expires in conn.execute(
        query, {"tz": handover.timezone}
    ):
        patterns = _patterns(raw)
        if not patterns:
            continue
        if by_token:
            if not 0 <= int(task) < handover.total_tokens:
                continue
            out.append((f"token:{task}", int(task), patterns, reason, creator, created, expires))
        else:
            out.append((str(task), None, patterns, reason, creator, created, expires))
    return out


def _patterns(raw: object) -> list[str]:
    """The original's patterns (a JSON list, a JSON string, or 1.1's one pattern),
    or [] if there is no usable pattern among them."""
    value = raw
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        return []
    return [p for p in items if isinstance(p, str) and p]
