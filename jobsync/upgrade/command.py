"""``python -m jobsync migrate`` on PostgreSQL: this library's schema, and the upgrade
from the original jobsync.

Law: the command prints its plan before it changes anything, and with
``dry_run`` changes nothing (the plan is read in a read-only transaction).
Every change happens under the migrations' advisory lock: arming the handover
in one transaction, the upgrade itself in the migrations' own (the original's
tables moved aside, this library's created, the locks and audit carried
over, all or nothing).  So the command may run twice, or while other copies
of it run and workers start: the upgrade happens exactly once, and a later
run finds nothing to do and says what was done.

With original workers still heartbeating the upgrade cannot happen yet (they
would write into tables this library had taken over): the command arms the
handover and returns, and the first new worker to start after the last
original worker stops carries it out (``jobsync.backends.postgres.original``).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import psycopg

from jobsync.backends import _checks as checks
from jobsync.backends.postgres import original as O
from jobsync.backends.postgres import schema as S
from jobsync.backends.postgres.handle import connection_info, translate
from jobsync.backends.postgres.original import Conn, Handover, Original
from jobsync.core.errors import HandoverPending, InvalidArgument
from jobsync.core.hashing import validate_hash_function, validate_total_tokens
from jobsync.upgrade.plan import Plan, describe, inspect

DEFAULT_ORIGINAL_TIMEOUT = 15.0
"""The original's default ``heartbeat_timeout_sec``."""
DEFAULT_TIMEZONE = "US/Eastern"
"""The original 1.1's default ``SYNC_SQL_TIMEZONE``."""
ARMED_BY = "python -m jobsync migrate"


@attrs.frozen(kw_only=True)
class Outcome:
    """What a run did: ``planned`` (dry run), ``armed`` (original workers live),
    ``upgraded`` (the original's state carried over), or ``ready`` (no original
    here; this library's schema created, upgraded or already current)."""

    state: str
    plan: Plan
    done: Handover | None = None
    """The handover as recorded once carried out (counts carried)."""
    versions: tuple[int, int] = (0, 0)


def migrate(
    dsn: str,
    *,
    schema: str = "public",
    prefix: str = "sync_",
    site: str | None = None,
    total_tokens: int,
    hash_function: str,
    original_timeout: float = DEFAULT_ORIGINAL_TIMEOUT,
    timezone: str = DEFAULT_TIMEZONE,
    dry_run: bool = False,
    say: Callable[[str], None] = print,
    connect_timeout: float = 5,
) -> Outcome:
    """Plan, print the plan through ``say``, then (unless ``dry_run``) carry it out.

    ``site``, ``total_tokens`` and ``hash_function`` are where the original's
    locks and audit go (``site`` is needed only when the original's tables
    are found); ``original_timeout`` is the original's heartbeat timeout,
    ``timezone`` the zone of the 1.1 layout's times.
    """
    S.validate_schema_name(schema)
    S.validate_prefix(prefix)
    seconds = checks.seconds("original_timeout", original_timeout)
    info = connection_info(
        dsn, "jobsync-migrate", checks.seconds("connect_timeout", connect_timeout)
    )
    try:
        with psycopg.connect(info, autocommit=True) as conn:

            def want(found: Original) -> Handover:
                wanted = _handover(
                    conn,
                    site=site,
                    total_tokens=total_tokens,
                    hash_function=hash_function,
                    original_timeout=seconds,
                    timezone=timezone,
                )
                O.check_constants(found, wanted)
                return wanted

            plan = inspect(conn, schema, prefix, want)
            for line in describe(plan):
                say(line)
            if dry_run:
                say("dry run: nothing was changed")
                return Outcome(state="planned", plan=plan)
            return _carry_out(conn, plan, say)
    except psycopg.Error as exc:
        raise translate(exc) from exc


def _handover(
    conn: Conn,
    *,
    site: str | None,
    total_tokens: int,
    hash_function: str,
    original_timeout: float,
    timezone: str,
) -> Handover:
    if site is None:
        raise InvalidArgument(
            "the original jobsync's tables are here: name the site its locks and audit go "
            "to with --site (the site your new workers use)"
        )
    zone = conn.execute("SELECT 1 FROM pg_timezone_names WHERE name = %s", (timezone,))
    if zone.fetchone() is None:
        raise InvalidArgument(f"--timezone {timezone!r} is not a time zone PostgreSQL knows")
    return Handover(
        site=checks.site_name(site),
        total_tokens=validate_total_tokens(total_tokens),
        hash_function=validate_hash_function(hash_function),
        original_timeout=original_timeout,
        timezone=timezone,
        armed_by=ARMED_BY,
    )


def _carry_out(conn: Conn, plan: Plan, say: Callable[[str], None]) -> Outcome:
    schema, prefix = plan.schema, plan.prefix
    if plan.wanted is not None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (S.advisory_key(schema, prefix),))
            if O.find(conn, schema, prefix) is not None:  # not upgraded meanwhile
                O.arm(conn, schema, prefix, plan.wanted)
    try:
        result = S.apply_migrations(conn, schema, prefix, upgrade=O.take_over)
    except HandoverPending as pending:
        say(
            f"armed: {pending}; start the new workers now: they claim nothing until then, "
            "and the first to start after that moves the original's tables aside and "
            "carries its locks and audit over"
        )
        return Outcome(state="armed", plan=plan)
    versions = (result["from"], result["to"])
    done = O.read_handover(conn, schema, prefix)
    if versions[0] != versions[1] and plan.wanted is not None and done is not None and done.done:
        say(
            f"upgraded: the original's tables are aside as {prefix}{O.ASIDE}*; "
            f"{done.locks_carried} lock(s) and {done.audit_carried} audit row(s) carried "
            f"into site {done.site!r}; schema version {versions[0]} -> {versions[1]}"
        )
        return Outcome(state="upgraded", plan=plan, done=done, versions=versions)
    change = f"{versions[0]} -> {versions[1]}" if versions[0] != versions[1] else "already at"
    say(
        f"PostgreSQL schema {schema!r}, table prefix {prefix!r}: version {change}"
        + ("" if versions[0] != versions[1] else f" {versions[1]}")
    )
    return Outcome(state="ready", plan=plan, done=done, versions=versions)
