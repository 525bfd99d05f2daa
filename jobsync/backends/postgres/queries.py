"""The SQL of the PostgreSQL backend: the macros and rendering every statement
shares, the site row's statements (every writer's first lock, and the change
counter's bump), and which rule each statement mirrors and which lock order
all of them keep.

The statements live by protocol area: ``member_queries`` (registration,
heartbeat, leaving, the glance), ``plan_queries`` (reading the cluster, expired
holders, the plan's writes), ``settle_queries`` (hand-offs, claims, settlement,
reaps) and ``plain_queries`` (sites, locks, history, pruning and plain reads,
which embody no rule).  ``render`` renders them all with this module's.

Templates name tables as ``{node}``, ``{token}``, ... (quoted, schema-qualified
``psycopg.sql.Identifier`` values filled in by ``render``) and take every value
as a bound parameter (``%(name)s``).  Four macros keep the judgements in one
place:

- ``@EXP:n@``   the lease end of node row ``n``: ``last_heartbeat + lease_timeout``;
- ``@LIVE:n@``  base.py's *live*: active or leaving and the lease end after
  the statement clock ``clock_timestamp()``;
- ``@KEPT:h@``  (``h.node``, ``h.incarnation``) is *not yet known expired*,
  judged only from facts no heartbeat can change: its row holds it in any
  state but ``dead``, or its row holds a newer incarnation whose
  ``fence_until`` is after the statement clock.  Its negation is base.py's
  *expired* for every incarnation whose expired lease was first marked dead
  (``MARK_EXPIRED_HOLDERS``, ``REAP``; see backend.py on the heartbeat race);
- ``@EPOCH:x@`` a timestamptz as float seconds since the Unix epoch.

Rules.  Each judgement below is the SQL form of one function of
``jobsync.core.rules`` (``tests/backends/test_rule_agreement.py`` feeds the
same rows to both and demands the same answer):

- ``@LIVE``: ``rules.is_live``;
- in ``plan_queries``: ``LEADER``: ``rules.oldest_live`` (registration time,
  then name in the "C" collation: code point order, as ``rules.seniority``
  compares names);
- in ``member_queries``: ``UPSERT_NODE`` (registration): ``rules.takeover``
  (its fence, and its refusal of an older process); ``HEARTBEAT``:
  ``rules.heartbeat``;
- the expiry judgement, ``MARK_EXPIRED_HOLDERS`` (and REAP's ``killed``)
  then ``@KEPT`` (``HELD_HOLDERS``, REAP's ``gone``): ``rules.lease_expired``,
  the EXPIRED class of ``rules.holding`` (``plan_queries``; REAP in
  ``settle_queries``);
- the plan's checks, ``commit_plan`` in ``planning.py`` with ``LEADER``,
  ``HELD_HOLDERS`` and the row conditions of ``ASSIGN``, ``ASSIGN_FEW`` and
  ``REVOKE`` (``plan_queries``): ``rules.plan_misfit``;
- in ``settle_queries``: ``_HAND_OVER`` (in ``ACK``), a release's
  destination: ``rules.destination``; ``EVICT``: ``rules.overdue``;
  REAP's ``purged``: ``rules.purgeable`` (and, beyond it, no open claim names
  the row);
- in ``member_queries``: DEREGISTER's ``keep`` (the tombstone):
  ``rules.leaves_tombstone``.

Lock order.  Every transaction that writes token rows or the site's counters
first locks the site row (``FOR UPDATE``), then its own node row if any, then
token rows, then audit rows.  So token rows cannot change under a transaction
that holds the site row.  Other nodes' rows (the rows their heartbeats
update) are locked only by single autocommit statements (``MARK_EXPIRED_HOLDERS``,
``REAP``) or by the last statement of a transaction (``EVICT``), always in name
order (``ORDER BY name ... FOR UPDATE``), never across statements.  A
heartbeat locks only its own node row; a claim takes ``FOR SHARE`` locks on
its token rows and then inserts audit rows, the same order again.  Cleanup
of claim rows uses ``SKIP LOCKED`` and never waits; a claim never waits on an
existing claim row (it inserts only keys with no committed row).  Every
other wait is bounded by the session's ``lock_timeout``.  Statements of one
transaction that must not reorder their locks are separate statements (the
sub-statements of one CTE run in no guaranteed order).
"""

from __future__ import annotations

import re

from psycopg import sql

from jobsync.backends.postgres import member_queries, plain_queries, plan_queries, settle_queries
from jobsync.backends.postgres.schema import Conn, identifiers

_MACROS = {
    "EXP": "({a}.last_heartbeat + {a}.lease_timeout * interval '1 second')",
    "LIVE": (
        "({a}.state IN ('active', 'leaving') AND "
        "{a}.last_heartbeat + {a}.lease_timeout * interval '1 second' > clock_timestamp())"
    ),
    "EPOCH": "extract(epoch from {a})::float8",
}
_MACRO = re.compile(r"@(EXP|LIVE|EPOCH):([a-z_.()]+)@")

# (h.node, h.incarnation) not yet known expired; see the module docstring.
_KEPT = """EXISTS (SELECT 1 FROM {node} hn WHERE hn.site = %(site)s AND hn.name = @A@.node
    AND ((hn.incarnation = @A@.incarnation AND hn.state <> 'dead')
      OR (hn.incarnation > @A@.incarnation AND hn.fence_until > clock_timestamp())))"""


def _expand(template: str) -> str:
    template = re.sub(r"@KEPT:([a-z_]+)@", lambda m: _KEPT.replace("@A@", m.group(1)), template)
    return _MACRO.sub(lambda m: _MACROS[m.group(1)].replace("{a}", m.group(2)), template)


# -- the site row: every writer's first lock ------------------------------------

LOCK_SITE = """SELECT total_tokens, generation, change_counter, plan_basis
    FROM {site} WHERE site = %(site)s FOR UPDATE"""

BUMP = """WITH s AS (
    UPDATE {site} SET change_counter = change_counter + 1 WHERE site = %(site)s
    RETURNING change_counter)
SELECT s.change_counter, pg_notify(%(channel)s, %(payload)s) FROM s"""

NOTIFY = "SELECT pg_notify(%(channel)s, %(payload)s)"


def _statements(namespace: dict[str, object]) -> dict[str, str]:
    return {
        name: value
        for name, value in namespace.items()
        if name.isupper() and not name.startswith("_") and isinstance(value, str)
    }


def _collect(*namespaces: dict[str, object]) -> dict[str, str]:
    """The statements of ``namespaces`` by name; a name defined twice is a mistake."""
    found: dict[str, str] = {}
    for namespace in namespaces:
        statements = _statements(namespace)
        twice = found.keys() & statements.keys()
        if twice:
            raise AssertionError(f"statements defined twice: {sorted(twice)}")
        found.update(statements)
    return found


QUERIES = _collect(
    dict(globals()),
    vars(member_queries),
    vars(plan_queries),
    vars(settle_queries),
    vars(plain_queries),
)
"""Every statement by name: this module's (the site row's), and those of
``member_queries``, ``plan_queries``, ``settle_queries`` and ``plain_queries``."""


def render(conn: Conn, schema: str, prefix: str) -> dict[str, bytes]:
    """Every query with its tables filled in, as bytes ready for ``execute``."""
    names = identifiers(schema, prefix)
    rendered = {}
    for name, template in QUERIES.items():
        composed = sql.SQL(_expand(template)).format(**names)
        rendered[name] = composed.as_bytes(conn)
    return rendered
