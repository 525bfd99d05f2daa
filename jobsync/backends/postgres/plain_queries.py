"""The statements that embody no protocol rule: sites, locks, history, pruning
and plain reads.

The rules' statements are in ``member_queries``, ``plan_queries`` and
``settle_queries``; ``queries`` documents the templates, the macros and the
lock order that apply here too, and renders every module's statements.
``BUSY_NODES`` refuses a reset while any node may still act: its lease or its
fence is not over.
"""

from __future__ import annotations

# -- sites --------------------------------------------------------------------

LIST_SITES = """SELECT site FROM {site} ORDER BY site"""

SITE_INFO = """SELECT site, total_tokens, hash_function, generation, change_counter, plan_basis,
    @EPOCH:created_at@ FROM {site} WHERE site = %(site)s"""

ENSURE_SITE = """WITH ins AS (
    INSERT INTO {site} (site, total_tokens, hash_function) VALUES (%(site)s, %(total)s, %(hash)s)
    ON CONFLICT (site) DO NOTHING RETURNING site, epoch_floor),
tok AS (
    INSERT INTO {token} (site, token_id, epoch)
    SELECT ins.site, g, ins.epoch_floor FROM ins, generate_series(0, %(total)s - 1) AS g)
SELECT count(*) FROM ins"""

BUSY_NODES = """SELECT n.name FROM {node} n WHERE n.site = %(site)s
    AND (n.fence_until > clock_timestamp() OR @EXP:n@ > clock_timestamp())"""

RESET_FLOOR = """SELECT coalesce(max(epoch), 0) + 1 FROM {token} WHERE site = %(site)s"""

RESET_DELETE_TOKENS = """DELETE FROM {token} WHERE site = %(site)s"""

RESET_TOKENS = """WITH ins AS (
    INSERT INTO {token} (site, token_id, epoch)
    SELECT %(site)s, g, %(floor)s FROM generate_series(0, %(total)s - 1) AS g)
UPDATE {site} s SET total_tokens = %(total)s, hash_function = %(hash)s,
    generation = s.generation + 1, change_counter = s.change_counter + 1,
    epoch_floor = greatest(s.epoch_floor, %(floor)s)
WHERE s.site = %(site)s
RETURNING s.site, s.total_tokens, s.hash_function, s.generation, s.change_counter,
    s.plan_basis, @EPOCH:s.created_at@"""

RESET_CLAIMS = """DELETE FROM {audit} WHERE site = %(site)s AND status = 'claimed'"""

LOCK_KEYS = """SELECT task_key FROM {lock} WHERE site = %(site)s"""

RETOKEN_LOCKS = """UPDATE {lock} l SET token_id = u.token_id
    FROM unnest(%(keys)s::text[], %(tokens)s::int[]) AS u(task_key, token_id)
    WHERE l.site = %(site)s AND l.task_key = u.task_key"""

# -- locks --------------------------------------------------------------------

PURGE_LOCKS = """DELETE FROM {lock} WHERE site = %(site)s AND expires_at IS NOT NULL
    AND expires_at <= clock_timestamp()"""

CLEAR_CREATOR_LOCKS = """DELETE FROM {lock} WHERE site = %(site)s
    AND (%(creator)s::text IS NULL OR created_by = %(creator)s)
    AND task_key <> ALL(%(keep)s::text[])"""

# Patterns travel as one JSON array of arrays (a text[] per lock cannot be
# unnested from a two-dimensional array); WITH ORDINALITY keeps their order.
UPSERT_LOCKS = """INSERT INTO {lock} AS l (site, task_key, token_id, patterns, reason, created_by,
    created_at, expires_at)
SELECT %(site)s, r.task_key, r.token_id,
    ARRAY(SELECT e.p FROM jsonb_array_elements_text(%(patterns)s::jsonb -> (r.ord::int - 1))
        WITH ORDINALITY AS e(p, i) ORDER BY e.i),
    r.reason, %(creator)s, clock_timestamp(),
    clock_timestamp() + r.expires_in * interval '1 second'
FROM unnest(%(keys)s::text[], %(tokens)s::int[], %(reasons)s::text[], %(expires)s::float8[])
    WITH ORDINALITY AS r(task_key, token_id, reason, expires_in, ord)
ON CONFLICT (site, task_key) DO UPDATE SET token_id = excluded.token_id,
    patterns = excluded.patterns, reason = excluded.reason, created_by = excluded.created_by,
    expires_at = excluded.expires_at"""

LIST_LOCKS = """SELECT s.site, l.task_key, l.token_id, l.patterns, l.reason, l.created_by,
    @EPOCH:l.created_at@, @EPOCH:l.expires_at@
FROM {site} s LEFT JOIN {lock} l ON l.site = s.site
    AND (l.expires_at IS NULL OR l.expires_at > clock_timestamp())
WHERE s.site = %(site)s"""

# -- history and maintenance --------------------------------------------------

READ_HISTORY = """SELECT s.site, h.generation, h.leader, @EPOCH:h.at@, h.trigger, h.nodes_before,
    h.nodes_after, h.moved, h.unowned, h.duration_ms, h.hot
FROM {site} s LEFT JOIN LATERAL (
    SELECT * FROM {rebalance} r WHERE r.site = s.site ORDER BY r.generation DESC
    LIMIT %(limit)s) AS h ON true
WHERE s.site = %(site)s"""

PRUNE_CUTOFF = """SELECT clock_timestamp() - %(age)s * interval '1 second'
    FROM {site} WHERE site = %(site)s"""

PRUNE_AUDIT = """WITH d AS (
    DELETE FROM {audit} WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM {audit} WHERE site = %(site)s AND status = 'done'
          AND completed_at < %(cutoff)s LIMIT %(batch)s))
    RETURNING 1)
SELECT count(*) FROM d"""

PRUNE_HISTORY = """WITH d AS (
    DELETE FROM {rebalance} WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM {rebalance} WHERE site = %(site)s AND at < %(cutoff)s
        LIMIT %(batch)s))
    RETURNING 1)
SELECT count(*) FROM d"""

# -- the planner's inputs in a node row: capacity and an operator's drain -------------

# The node's own incarnation only; (row held, capacity changed).
SET_CAPACITY = """WITH old AS (
    SELECT n.capacity FROM {node} n
    WHERE n.site = %(site)s AND n.name = %(name)s AND n.incarnation = %(inc)s FOR UPDATE),
upd AS (
    UPDATE {node} n SET capacity = %(capacity)s FROM old
    WHERE n.site = %(site)s AND n.name = %(name)s AND old.capacity <> %(capacity)s RETURNING 1)
SELECT EXISTS (SELECT 1 FROM old), EXISTS (SELECT 1 FROM upd)"""

# Whatever incarnation holds the name; a NULL duration drains until undrained.
# Returns the row as READ_NODES reads it, and whether anything changed.
SET_DRAIN = """WITH old AS (
    SELECT n.drained_at FROM {node} n WHERE n.site = %(site)s AND n.name = %(name)s FOR UPDATE)
UPDATE {node} n SET
    drained_at = CASE WHEN %(drained)s THEN clock_timestamp() END,
    drain_until = CASE WHEN %(drained)s
        THEN clock_timestamp() + %(duration)s::float8 * interval '1 second' END,
    drain_note = CASE WHEN %(drained)s THEN %(note)s::text ELSE '' END
FROM old WHERE n.site = %(site)s AND n.name = %(name)s
RETURNING n.name, n.incarnation, @EPOCH:n.created_on@, @EPOCH:n.last_heartbeat@,
    n.lease_timeout, n.state, coalesce(@EPOCH:n.fence_until@, 0), n.process, n.capacity,
    @EPOCH:n.drained_at@, @EPOCH:n.drain_until@, n.drain_note,
    %(drained)s OR old.drained_at IS NOT NULL"""

# -- plain reads ------------------------------------------------------------------

READ_NODES = """SELECT @EPOCH:clock_timestamp()@, s.site IS NOT NULL, n.name, n.incarnation,
    @EPOCH:n.created_on@, @EPOCH:n.last_heartbeat@, n.lease_timeout, n.state,
    coalesce(@EPOCH:n.fence_until@, 0), n.process, n.capacity, @EPOCH:n.drained_at@,
    @EPOCH:n.drain_until@, n.drain_note
FROM (SELECT 1) AS one LEFT JOIN {site} s ON s.site = %(site)s
LEFT JOIN {node} n ON n.site = s.site"""

# The tokens of one incarnation, by the owner index ({token_owner}, schema 5),
# and those on their way to its name: pending releases destined to it (by the
# pending index: releases in flight are few) and rows its older incarnation
# still holds, each row counted once.  The rows touched are this node's, not
# the site's: every node reads this after every change.  (The owner index
# makes a plan's reassignments non-HOT updates; a plan writes the tokens it
# moves, a few per change, while without it each of N nodes read all T rows.)
READ_OWNED = """SELECT @EPOCH:clock_timestamp()@, s.change_counter, s.plan_basis,
    m.tokens, m.epochs, m.pending, i.pending_in + i.held_before
FROM {site} s
CROSS JOIN LATERAL (
    SELECT array_agg(t.token_id ORDER BY t.token_id) AS tokens,
        array_agg(t.epoch ORDER BY t.token_id) AS epochs,
        array_agg(t.token_id) FILTER (WHERE t.pending_deadline IS NOT NULL) AS pending
    FROM {token} t
    WHERE t.site = s.site AND t.node = %(name)s AND t.incarnation = %(inc)s) AS m
CROSS JOIN LATERAL (
    SELECT (SELECT count(*) FROM {token} t
            WHERE t.site = s.site AND t.pending_deadline IS NOT NULL
              AND t.pending_to = %(name)s) AS pending_in,
        (SELECT count(*) FROM {token} t
            WHERE t.site = s.site AND t.node = %(name)s AND t.incarnation <> %(inc)s
              AND (t.pending_deadline IS NULL OR t.pending_to IS DISTINCT FROM %(name)s))
            AS held_before) AS i
WHERE s.site = %(site)s"""

# A plain read of committed state: never waits on a lock.
OPEN_CLAIMS = """SELECT (SELECT count(*) FROM {site} WHERE site = %(site)s),
    array(SELECT task_key FROM {audit} WHERE site = %(site)s AND date = %(date)s
      AND task_key = ANY(%(keys)s::text[]) AND incarnation = %(inc)s AND status = 'claimed')"""

READ_AUDIT = """SELECT s.site, a.task_key, a.date, a.node, a.incarnation, a.token_id, a.epoch,
    a.status, @EPOCH:a.claimed_at@, @EPOCH:a.completed_at@
FROM {site} s LEFT JOIN {audit} a ON a.site = s.site AND a.date = %(date)s
    AND (%(name)s::text IS NULL OR a.node = %(name)s)
WHERE s.site = %(site)s"""

# The leader's load estimate: completions in the order they finished, from the
# partial index on (site, completed_at) WHERE status = 'done'.
READ_COMPLETIONS = """SELECT s.site, a.token_id, @EPOCH:a.claimed_at@, @EPOCH:a.completed_at@,
    a.cost
FROM {site} s LEFT JOIN LATERAL (
    SELECT token_id, claimed_at, completed_at, cost FROM {audit}
    WHERE site = s.site AND status = 'done' AND completed_at > to_timestamp(%(after)s)
    ORDER BY completed_at LIMIT %(limit)s) AS a ON true
WHERE s.site = %(site)s"""

SITE_EXISTS = "SELECT 1 FROM {site} WHERE site = %(site)s"

# A pooled handle's change signal: every statement that notifies the site's
# channel also updates its site row, and an UPDATE writes a new row version
# (a new xmin) even when no value changes (a plan that moved nothing).
# Heartbeats and claims never write the site row.
SITE_SIGNAL = "SELECT xmin::text FROM {site} WHERE site = %(site)s"

NOW = "SELECT @EPOCH:clock_timestamp()@"
