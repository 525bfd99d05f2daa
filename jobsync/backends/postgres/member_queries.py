"""The PostgreSQL backend's SQL for membership: taking an incarnation and a name's
row (``rules.takeover``), the heartbeat (``rules.heartbeat``), leaving and
deregistering (``rules.leaves_tombstone``), and a non-leader's glance at its own
row and the leader (``rules.oldest_live``).

Templates, macros, lock order and the rules each statement mirrors are
described in ``queries.py``, which renders these statements with its own.
"""

from __future__ import annotations

# -- registration, heartbeat, leaving -------------------------------------------

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

# -- the glance ---------------------------------------------------------------

# A non-leader's read (``Backend.glance``): the name's own row by its key and
# the leader, ``rules.oldest_live`` as in ``plan_queries.LEADER``: the first
# live row in the seniority index's order ({node_seniority}, schema 5), so the
# rows touched do not grow with the site (dead rows, rare, are stepped over).
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
