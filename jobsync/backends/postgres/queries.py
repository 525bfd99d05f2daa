"""The SQL of the PostgreSQL backend: the statements that embody the protocol's
rules, and the macros and rendering every statement shares.

Templates name tables as ``{node}``, ``{token}``, ... (quoted, schema-qualified
``psycopg.sql.Identifier`` values filled in by ``render``) and take every value
as a bound parameter (``%(name)s``).  ``render`` renders this module's
statements, those of ``settle_queries`` (hand-offs, claims, settlement, reaps)
and those of ``plain_queries`` (sites, locks, history, pruning and plain
reads, which embody no rule).  Four macros keep the judgements in one
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
- ``LEADER``: ``rules.oldest_live`` (registration time, then name in the "C"
  collation: code point order, as ``rules.seniority`` compares names);
- ``UPSERT_NODE`` (registration): ``rules.takeover`` (its fence, and its
  refusal of an older process);
- ``HEARTBEAT``: ``rules.heartbeat``;
- the expiry judgement, ``MARK_EXPIRED_HOLDERS`` (and REAP's ``killed``)
  then ``@KEPT`` (``HELD_HOLDERS``, REAP's ``gone``): ``rules.lease_expired``,
  the EXPIRED class of ``rules.holding``;
- the plan's checks, ``commit_plan`` in ``planning.py`` with ``LEADER``,
  ``HELD_HOLDERS`` and the row conditions of ``ASSIGN``, ``ASSIGN_FEW`` and
  ``REVOKE``: ``rules.plan_misfit``;
- in ``settle_queries``: ``_HAND_OVER`` (in ``ACK``), a release's
  destination: ``rules.destination``; ``EVICT``: ``rules.overdue``;
  REAP's ``purged``: ``rules.purgeable`` (and, beyond it, no open claim names
  the row);
- DEREGISTER's ``keep`` (the tombstone): ``rules.leaves_tombstone``.

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

from jobsync.backends.postgres import plain_queries, settle_queries
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

# -- membership ---------------------------------------------------------------

NEXT_INCARNATION = """UPDATE {site}
    SET next_incarnation = next_incarnation + 1, change_counter = change_counter + 1
    WHERE site = %(site)s RETURNING next_incarnation - 1, change_counter"""

# Takes the name's row over (the caller's own row: the site row is locked
# first).  ``same``: the row's incarnation was registered by the caller's
# process (never when the identity is empty).  The fence is the later of the
# stored fence and the older incarnation's lease end unless that incarnation
# was already dead or is the caller's own (greatest() ignores NULLs; NULL
# means no fence).  ``refused``: the caller's ``known`` incarnation is older
# than the row's and another process registered it; then nothing is written
# here and the caller rolls its transaction back.
UPSERT_NODE = """WITH t AS MATERIALIZED (SELECT clock_timestamp() AS ts),
old AS (
    SELECT n.incarnation, n.process, n.state, n.fence_until, @EXP:n@ AS expires FROM {node} n
    WHERE n.site = %(site)s AND n.name = %(name)s FOR UPDATE),
o AS (
    SELECT old.*, (%(process)s::text <> '' AND old.process = %(process)s::text) AS same
    FROM (SELECT 1) AS one LEFT JOIN old ON true),
f AS (
    SELECT o.incarnation AS held,
        coalesce(%(known)s::int8 IS NOT NULL AND o.incarnation > %(known)s::int8
            AND NOT o.same, false) AS refused,
        CASE WHEN o.state IS NULL THEN NULL
             WHEN o.state <> 'dead' AND NOT o.same THEN greatest(o.fence_until, o.expires)
             ELSE o.fence_until END AS fence
    FROM o),
ins AS (
    INSERT INTO {node} AS n (site, name, created_on, last_heartbeat, lease_timeout, incarnation,
        state, fence_until, process, capacity)
    SELECT %(site)s, %(name)s, t.ts, t.ts, %(lease)s, %(inc)s, 'active', f.fence,
        %(process)s::text, %(capacity)s::float8
    FROM t, f WHERE NOT f.refused
    ON CONFLICT (site, name) DO UPDATE SET created_on = excluded.created_on,
        last_heartbeat = excluded.last_heartbeat, lease_timeout = excluded.lease_timeout,
        incarnation = excluded.incarnation, state = 'active',
        fence_until = excluded.fence_until, process = excluded.process,
        capacity = excluded.capacity
    RETURNING @EPOCH:n.created_on@ AS at, coalesce(@EPOCH:n.fence_until@, 0) AS fence)
SELECT f.refused, f.held, ins.at, ins.fence, (SELECT pg_notify(%(channel)s, 'join') FROM ins)
FROM f LEFT JOIN ins ON true"""

# The steady-state heartbeat: one statement, one round trip.  It updates the
# name's row whatever it holds, so it locks and reads the row's *latest*
# version: a renewal only if the row holds this incarnation, active or
# leaving, with its lease unexpired on the statement clock (re-evaluated after
# any lock wait, see backend.py on the reap race); the row is marked dead if
# that lease already ran out; otherwise the row is written back unchanged.
# Only a renewal changes anything, and it touches no indexed column (HOT).
# Rows touched: the site row, the name's row, and the ``watch`` row by its key;
# only the leader (``leading``) reads every node row of the site, for the
# earliest lease end and the live count (a CASE: not run otherwise, even in a
# generic plan).
HEARTBEAT = """WITH t AS MATERIALIZED (SELECT clock_timestamp() AS ts),
hb AS (
    UPDATE {node} n SET
        last_heartbeat = CASE
            WHEN n.incarnation = %(inc)s AND n.state IN ('active', 'leaving')
                 AND @EXP:n@ > clock_timestamp()
            THEN (SELECT ts FROM t) ELSE n.last_heartbeat END,
        state = CASE
            WHEN n.incarnation = %(inc)s AND n.state IN ('active', 'leaving')
                 AND @EXP:n@ <= clock_timestamp()
            THEN 'dead' ELSE n.state END
    WHERE n.site = %(site)s AND n.name = %(name)s
    RETURNING n.incarnation, n.state, n.last_heartbeat)
SELECT @EPOCH:t.ts@, s.change_counter, s.plan_basis,
    CASE WHEN %(leading)s THEN (SELECT ARRAY[@EPOCH:o.last_heartbeat@, o.lease_timeout]
        FROM {node} o WHERE o.site = %(site)s AND o.name <> %(name)s AND @LIVE:o@
        ORDER BY @EXP:o@ LIMIT 1) END,
    hb.incarnation, hb.state, hb.last_heartbeat = t.ts,
    CASE WHEN %(leading)s THEN (SELECT count(*) FROM {node} o
        WHERE o.site = %(site)s AND o.name <> %(name)s AND @LIVE:o@) END,
    (SELECT ARRAY[@EPOCH:w.last_heartbeat@, w.lease_timeout] FROM {node} w
        WHERE w.site = %(site)s AND w.name = %(watch)s::text AND w.name <> %(name)s
          AND @LIVE:w@)
FROM t LEFT JOIN {site} s ON s.site = %(site)s LEFT JOIN hb ON true"""

LEAVING_STATE = """SELECT n.state FROM {node} n
    WHERE n.site = %(site)s AND n.name = %(name)s AND n.incarnation = %(inc)s AND @LIVE:n@
    FOR UPDATE"""

SET_LEAVING = """UPDATE {node} SET state = 'leaving'
    WHERE site = %(site)s AND name = %(name)s AND incarnation = %(inc)s"""

# The caller's own row (the site row is locked first, so its incarnation and
# fence cannot change under the statement).  Its open claims are deleted,
# skipping rows locked by an open transaction (a user's completion).  The row
# is deleted, unless it still fences an older incarnation or claims were
# skipped: then it is kept, dead, fence intact (a tombstone that keeps the
# older tokens out of reach and the skipped claims in the leader's sight, for
# REAP).  ``skipped``: open claims of the snapshot that ``a`` did not delete
# (the sub-statements share the snapshot; ``a``'s RETURNING says what it did).
# Returns whether the row held the incarnation, and how many rows changed (a
# repeat, its first answer lost, finds nothing to change).
DEREGISTER = """WITH r AS MATERIALIZED (
    SELECT coalesce(n.fence_until > clock_timestamp(), false) AS fenced FROM {node} n
    WHERE n.site = %(site)s AND n.name = %(name)s AND n.incarnation = %(inc)s),
a AS (
    DELETE FROM {audit} WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM {audit} WHERE site = %(site)s AND incarnation = %(inc)s
          AND status = 'claimed' AND EXISTS (SELECT 1 FROM r)
        FOR UPDATE SKIP LOCKED))
    RETURNING date, task_key),
skipped AS (
    SELECT 1 FROM {audit} x WHERE x.site = %(site)s AND x.incarnation = %(inc)s
      AND x.status = 'claimed'
      AND NOT EXISTS (SELECT 1 FROM a WHERE a.date = x.date AND a.task_key = x.task_key)),
keep AS MATERIALIZED (
    SELECT r.fenced OR EXISTS (SELECT 1 FROM skipped) AS keep FROM r),
d AS (
    DELETE FROM {node} WHERE site = %(site)s AND name = %(name)s AND incarnation = %(inc)s
      AND EXISTS (SELECT 1 FROM keep WHERE NOT keep.keep)
    RETURNING 1),
k AS (
    UPDATE {node} SET state = 'dead'
    WHERE site = %(site)s AND name = %(name)s AND incarnation = %(inc)s AND state <> 'dead'
      AND EXISTS (SELECT 1 FROM keep WHERE keep.keep)
    RETURNING 1),
t AS (
    UPDATE {token} SET node = NULL, incarnation = NULL, epoch = epoch + 1,
        pending_to = NULL, pending_deadline = NULL
    WHERE site = %(site)s AND node = %(name)s AND incarnation = %(inc)s
      AND EXISTS (SELECT 1 FROM r)
    RETURNING 1)
SELECT (SELECT count(*) FROM r),
    (SELECT count(*) FROM d) + (SELECT count(*) FROM k) + (SELECT count(*) FROM t)
        + (SELECT count(*) FROM a)"""

# -- planning -----------------------------------------------------------------

READ_CLUSTER = """WITH t AS MATERIALIZED (SELECT clock_timestamp() AS ts),
tk AS (
    SELECT array_agg(x.node) AS owners, array_agg(x.incarnation) AS incs,
        array_agg(x.epoch) AS epochs, array_agg(x.pending_to) AS dests,
        array_agg(@EPOCH:x.pending_deadline@) AS deadlines, array_agg(x.token_id) AS ids
    FROM (SELECT * FROM {token} WHERE site = %(site)s ORDER BY token_id) AS x)
SELECT @EPOCH:t.ts@, s.site, s.total_tokens, s.hash_function, s.generation, s.change_counter,
    s.plan_basis, @EPOCH:s.created_at@,
    (SELECT json_agg(json_build_array(n.name, n.incarnation, @EPOCH:n.created_on@,
        @EPOCH:n.last_heartbeat@, n.lease_timeout, n.state,
        coalesce(@EPOCH:n.fence_until@, 0), n.process, n.capacity, @EPOCH:n.drained_at@,
        @EPOCH:n.drain_until@, n.drain_note)) FROM {node} n WHERE n.site = s.site),
    (SELECT json_agg(json_build_array(l.task_key, l.token_id, l.patterns, l.reason,
        l.created_by, @EPOCH:l.created_at@, @EPOCH:l.expires_at@))
        FROM {lock} l WHERE l.site = s.site AND (l.expires_at IS NULL OR l.expires_at > t.ts)),
    tk.ids, tk.owners, tk.incs, tk.epochs, tk.dests, tk.deadlines
FROM t CROSS JOIN {site} s CROSS JOIN tk WHERE s.site = %(site)s"""

LEADER = """SELECT n.name, n.incarnation FROM {node} n WHERE n.site = %(site)s AND @LIVE:n@
    ORDER BY n.created_on, n.name COLLATE "C" LIMIT 1"""

# A non-leader's read (``Backend.glance``): the name's own row by its key and
# the leader, ``rules.oldest_live`` as in LEADER: the first live row in the
# seniority index's order ({node_seniority}, schema 5), so the rows touched do
# not grow with the site (dead rows, rare, are stepped over).
_NODE_COLUMNS = """{a}.name, {a}.incarnation, @EPOCH:{a}.created_on@, @EPOCH:{a}.last_heartbeat@,
    {a}.lease_timeout, {a}.state, coalesce(@EPOCH:{a}.fence_until@, 0), {a}.process,
    {a}.capacity, @EPOCH:{a}.drained_at@, @EPOCH:{a}.drain_until@, {a}.drain_note"""
GLANCE = (
    """WITH t AS MATERIALIZED (SELECT clock_timestamp() AS ts)
SELECT @EPOCH:t.ts@, s.site IS NOT NULL, """
    + _NODE_COLUMNS.replace("{a}", "o")
    + ",\n    "
    + _NODE_COLUMNS.replace("{a}", "l")
    + """
FROM t LEFT JOIN {site} s ON s.site = %(site)s
LEFT JOIN {node} o ON o.site = s.site AND o.name = %(name)s
LEFT JOIN LATERAL (SELECT * FROM {node} n WHERE n.site = s.site AND @LIVE:n@
    ORDER BY n.created_on, n.name COLLATE "C" LIMIT 1) AS l ON true"""
)

# The expected incarnations of a plan's DirectAssigns, before its transaction:
# judging a lease expired and marking it dead, in one autocommit statement (see
# backend.py on the heartbeat race).  The candidates' rows are locked in name
# order, and the UPDATE re-evaluates its WHERE on the latest row version after
# waiting for an in-flight heartbeat (EvalPlanQual, clock_timestamp() evaluated
# again), so a heartbeat that renewed in time wins.  A lease that ran out is
# never renewed afterwards, so a row marked dead stays rightly dead.
MARK_EXPIRED_HOLDERS = """WITH l AS (
    SELECT c.name, c.incarnation FROM {node} c
    WHERE c.site = %(site)s AND c.state <> 'dead' AND @EXP:c@ <= clock_timestamp()
      AND c.incarnation = ANY(%(incs)s::int8[])
    ORDER BY c.name COLLATE "C" FOR UPDATE OF c)
UPDATE {node} n SET state = 'dead' FROM l
WHERE n.site = %(site)s AND n.name = l.name AND n.incarnation = l.incarnation
  AND n.state <> 'dead' AND @EXP:n@ <= clock_timestamp()"""

# The (name, incarnation) holding each sample token (one token per expected
# incarnation: token rows cannot change while the site row is locked, so one
# row names the holder) whose lease is not known expired: the plan is refused.
HELD_HOLDERS = """SELECT h.node, h.incarnation FROM (
    SELECT DISTINCT t.node, t.incarnation FROM {token} t WHERE t.site = %(site)s
      AND t.token_id = ANY(%(samples)s::int4[]) AND t.incarnation = ANY(%(incs)s::int8[])) AS h
WHERE @KEPT:h@ LIMIT 1"""

# Dense arrays indexed by token_id + 1, sent as comma-separated text (far
# cheaper to adapt and parse than 10,000-element array parameters) and parsed
# once in ``p``: the expected incarnation (-1: unowned) and epoch (-1: not
# written by this plan); the new owner as an index into ``names`` (0:
# unowned) and its incarnation (-1: none).  Fixed-width arrays without NULLs,
# so each subscript is O(1); no join; and no indexed column changes, so on a
# table with free space these are HOT updates.
ASSIGN = """WITH p AS MATERIALIZED (
    SELECT string_to_array(%(exp_incs)s::text, ',')::int8[] AS exp_incs,
        string_to_array(%(exp_epochs)s::text, ',')::int8[] AS exp_epochs,
        string_to_array(%(owner_ix)s::text, ',')::int4[] AS owner_ix,
        string_to_array(%(incs)s::text, ',')::int8[] AS incs,
        %(names)s::text[] AS names)
UPDATE {token} t SET node = p.names[p.owner_ix[t.token_id + 1]],
    incarnation = nullif(p.incs[t.token_id + 1], -1),
    epoch = t.epoch + 1, pending_to = NULL, pending_deadline = NULL
FROM p
WHERE t.site = %(site)s AND p.exp_epochs[t.token_id + 1] >= 0
  AND t.incarnation IS NOT DISTINCT FROM nullif(p.exp_incs[t.token_id + 1], -1)
  AND t.epoch = p.exp_epochs[t.token_id + 1]"""

# ASSIGN for plans that write few tokens: compact arrays joined by token.
ASSIGN_FEW = """WITH a AS MATERIALIZED (
    SELECT * FROM unnest(string_to_array(%(tokens)s::text, ',')::int4[],
        string_to_array(%(exp_incs)s::text, ',')::int8[],
        string_to_array(%(exp_epochs)s::text, ',')::int8[],
        string_to_array(%(owner_ix)s::text, ',')::int4[],
        string_to_array(%(incs)s::text, ',')::int8[])
        AS a(token_id, exp_inc, exp_epoch, owner_ix, inc))
UPDATE {token} t SET node = (%(names)s::text[])[a.owner_ix], incarnation = nullif(a.inc, -1),
    epoch = t.epoch + 1, pending_to = NULL, pending_deadline = NULL
FROM a
WHERE t.site = %(site)s AND t.token_id = a.token_id
  AND t.incarnation IS NOT DISTINCT FROM nullif(a.exp_inc, -1) AND t.epoch = a.exp_epoch"""

# The open claims of incarnations whose leases are over (they are dead already:
# MARK_EXPIRED_HOLDERS ran first, and the plan found them not KEPT).
BURY = """DELETE FROM {audit} WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM {audit} WHERE site = %(site)s AND incarnation = ANY(%(incs)s::int8[])
      AND status = 'claimed'
    FOR UPDATE SKIP LOCKED))"""

# A pending release keeps its deadline; only the destination changes.
# Arrays travel as comma-separated text (see ASSIGN); destinations as text[].
REVOKE = """WITH r AS MATERIALIZED (
    SELECT * FROM unnest(string_to_array(%(tokens)s::text, ',')::int4[],
        string_to_array(%(exp_incs)s::text, ',')::int8[],
        string_to_array(%(exp_epochs)s::text, ',')::int8[], %(dests)s::text[])
        AS r(token_id, exp_inc, exp_epoch, dest))
UPDATE {token} t SET pending_to = r.dest,
    pending_deadline = coalesce(t.pending_deadline,
        clock_timestamp() + %(ack)s * interval '1 second')
FROM r
WHERE t.site = %(site)s AND t.token_id = r.token_id
  AND t.incarnation = r.exp_inc AND t.epoch = r.exp_epoch"""

TOKEN_ROWS = """SELECT token_id, incarnation, epoch FROM {token}
    WHERE site = %(site)s AND token_id = ANY(%(tokens)s::int[])"""

FINISH_PLAN = """WITH s AS (
    UPDATE {site} SET generation = generation + 1, change_counter = change_counter + 1,
        plan_basis = greatest(plan_basis, %(basis)s)
    WHERE site = %(site)s RETURNING generation),
h AS (
    INSERT INTO {rebalance} (site, generation, leader, at, trigger, nodes_before, nodes_after,
        moved, unowned, duration_ms, hot)
    SELECT %(site)s, s.generation, %(leader)s, clock_timestamp(), %(trigger)s,
        %(before)s::text[], %(after)s::text[], %(moved)s, %(unowned)s, %(duration)s,
        %(hot)s::int[]
    FROM s WHERE %(history)s)
SELECT s.generation, pg_notify(%(channel)s, %(payload)s) FROM s"""

RAISE_BASIS = """WITH s AS (
    UPDATE {site} SET plan_basis = greatest(plan_basis, %(basis)s) WHERE site = %(site)s
    RETURNING generation)
SELECT s.generation, pg_notify(%(channel)s, %(payload)s) FROM s"""


def _statements(namespace: dict[str, object]) -> dict[str, str]:
    return {
        name: value
        for name, value in namespace.items()
        if name.isupper() and not name.startswith("_") and isinstance(value, str)
    }


QUERIES = {
    **_statements(dict(globals())),
    **_statements(vars(settle_queries)),
    **_statements(vars(plain_queries)),
}
"""Every statement by name: this module's, ``settle_queries``' and ``plain_queries``'."""


def render(conn: Conn, schema: str, prefix: str) -> dict[str, bytes]:
    """Every query with its tables filled in, as bytes ready for ``execute``."""
    names = identifiers(schema, prefix)
    rendered = {}
    for name, template in QUERIES.items():
        composed = sql.SQL(_expand(template)).format(**names)
        rendered[name] = composed.as_bytes(conn)
    return rendered
