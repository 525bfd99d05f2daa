"""The PostgreSQL backend's SQL for planning: reading the cluster, the leader
(``rules.oldest_live``), judging and marking expired holders
(``rules.lease_expired``), the plan's checks and writes (``rules.plan_misfit``)
and the plan's record.

Templates, macros, lock order and the rules each statement mirrors are
described in ``queries.py``, which renders these statements with its own.
"""

from __future__ import annotations

# -- reading the cluster -------------------------------------------------------

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

# -- expired holders -----------------------------------------------------------

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

# -- the plan's writes ---------------------------------------------------------

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
